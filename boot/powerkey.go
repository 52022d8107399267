package boot

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
)

// Linux input events (<linux/input.h>, <linux/input-event-codes.h>).
const (
	evKey    = 0x01
	keyPower = 116
	// inputEventSize is sizeof(struct input_event) on 64-bit Linux: a
	// struct timeval, then type, code (u16) and value (s32).
	inputEventSize = 24
)

// HasPowerKey reports whether an input device's key capabilities (the
// sysfs file capabilities/key: hexadecimal words, most significant first,
// each as wide as a C long) include KEY_POWER.
func HasPowerKey(caps string, wordBits int) bool {
	words := strings.Fields(caps)
	idx := keyPower / wordBits
	if idx >= len(words) {
		return false
	}
	w, err := strconv.ParseUint(words[len(words)-1-idx], 16, wordBits)
	if err != nil {
		return false
	}
	return w&(1<<(keyPower%wordBits)) != 0
}

// WaitPowerKey reads input events from an evdev device until the power key
// is pressed. It returns nil then, or the error that ended the reading.
func WaitPowerKey(r io.Reader) error {
	buf := make([]byte, inputEventSize)
	for {
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("read input events: %w", err)
		}
		typ := binary.NativeEndian.Uint16(buf[16:])
		code := binary.NativeEndian.Uint16(buf[18:])
		value := int32(binary.NativeEndian.Uint32(buf[20:]))
		if typ == evKey && code == keyPower && value == 1 {
			return nil
		}
	}
}

// longBits is the width of a C long here.
const longBits = bits.UintSize
