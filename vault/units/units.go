// Package units formats quantities for the people who read them: on the
// console, in the CLI's output, in the journal's messages.
package units

import "fmt"

// Bytes formats a byte count with binary units: "512 B", "1.5 KiB",
// "57.3 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Count formats n of a thing named by a noun that takes an "s" in the
// plural: "1 file", "0 files", "3 files".
func Count[N ~int | ~int32 | ~int64 | ~uint | ~uint32 | ~uint64](n N, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
