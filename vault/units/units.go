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
