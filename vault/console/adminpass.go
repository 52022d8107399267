package console

import (
	"bytes"
	"context"
	"errors"
	"unicode/utf8"
)

// RecordAdminChangeFailed is journaled when a change of the admin
// passphrase at the console fails for another reason than a wrong current
// one (which the admin guard journals itself, as admin-refused; a change
// that succeeds is its admin-passphrase-set record).
const RecordAdminChangeFailed = "console-admin-change-failed"

// adminChange is the dialog that changes the admin passphrase, p in the
// settings: the current one, then the new one twice. Nothing typed is
// shown, and every buffer is cleared as soon as it is no longer needed.
type adminChange struct {
	step int // 0 the current one, 1 the new one, 2 the new one again
	bufs [3][]byte
	busy bool
	msg  string
	bad  bool
}

var adminSteps = [3]string{"Current admin passphrase: ", "New admin passphrase:     ", "The new one again:        "}

type adminSetMsg struct{ err error }

func (a *adminChange) clear() {
	for i := range a.bufs {
		clear(a.bufs[i])
		a.bufs[i] = nil
	}
}

// openAdminChange is p in the settings.
func (m *Model) openAdminChange() {
	m.ac = &adminChange{}
	m.msg = ""
}

func (m *Model) keyAdminChange(k Key) []Cmd {
	a := m.ac
	if a.busy {
		return nil
	}
	switch k.Name {
	case "Esc":
		a.clear()
		m.ac = nil
		m.say("cancelled: the admin passphrase is unchanged")
	case "Backspace", "Rune":
		a.bufs[a.step] = editSecret(a.bufs[a.step], k)
	case "Enter":
		if len(a.bufs[a.step]) == 0 {
			return nil
		}
		if a.step < 2 {
			a.step++
			a.msg = ""
			return nil
		}
		cur, next, again := a.bufs[0], a.bufs[1], a.bufs[2]
		if !bytes.Equal(next, again) {
			clear(next)
			clear(again)
			a.bufs[1], a.bufs[2] = nil, nil
			a.step, a.msg, a.bad = 1, "the two new ones differ: type the new one again", true
			return nil
		}
		a.bufs = [3][]byte{}
		clear(again)
		a.busy, a.msg, a.bad = true, "", false
		b := m.b
		return []Cmd{func() Msg {
			err := b.SetAdmin(context.Background(), cur, next)
			clear(cur)
			clear(next)
			return adminSetMsg{err}
		}}
	}
	return nil
}

func (m *Model) adminSet(v adminSetMsg) []Cmd {
	a := m.ac
	if a == nil {
		return nil
	}
	a.busy = false
	switch {
	case v.err == nil:
		m.ac = nil
		m.say("the admin passphrase is changed (journaled)")
	case errors.Is(v.err, ErrAdminPassphrase):
		a.step, a.msg, a.bad = 0, "wrong admin passphrase: refused, nothing changed (each refusal makes the next check wait longer)", true
	default:
		m.ac = nil
		m.fail("the admin passphrase is unchanged: %v", v.err)
		return []Cmd{m.journal(RecordAdminChangeFailed, "console: a change of the admin passphrase failed: "+v.err.Error(), nil)}
	}
	return nil
}

// editSecret applies an edit key to a passphrase being typed. The buffer
// has room for any passphrase a person types, so that it is never copied
// to a larger array, leaving a copy behind.
func editSecret(buf []byte, k Key) []byte {
	switch k.Name {
	case "Backspace":
		if len(buf) > 0 {
			// Drop the last UTF-8 character.
			i := len(buf) - 1
			for i > 0 && buf[i]&0xC0 == 0x80 {
				i--
			}
			buf = buf[:i]
		}
	case "Rune":
		if buf == nil {
			buf = make([]byte, 0, maxPassphrase)
		}
		if len(buf)+utf8.UTFMax <= cap(buf) {
			buf = utf8.AppendRune(buf, k.Rune)
		}
	}
	return buf
}

func drawAdminChange(c canvas, m *Model) {
	a := m.ac
	x, y := box(c, "Change the admin passphrase", 64, 7)
	c.put(x, y, styleNormal, "It guards the settings, keys and imports; it reads nothing.")
	c.put(x, y+1, styleDim, "(nothing is shown as you type)")
	for i := 0; i <= a.step && i < 3; i++ {
		c.put(x, y+3+i, styleNormal, adminSteps[i])
	}
	switch {
	case a.busy:
		c.put(x, y+6, styleNormal, spinner[m.spin%len(spinner)]+" checking and setting…")
	case a.msg != "":
		st := styleNormal
		if a.bad {
			st = styleErr
		}
		c.put(x, y+6, st, fit(a.msg, 64))
		c.s.ShowCursor(x+len(adminSteps[0]), y+3+a.step)
	default:
		c.s.ShowCursor(x+len(adminSteps[0]), y+3+a.step)
	}
}
