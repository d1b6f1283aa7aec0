package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/checkout-demo/checkout/internal/web"
)

// checkStrictJSON refuses what encoding/json would quietly take: invalid
// UTF-8 (it would become U+FFFD), a key given twice in one object (the last
// would win, and another parser may pick the first), anything after the
// value, and, in any string (keys included, after unescaping), control
// characters (Unicode Cc: C0, DEL, C1) and the bidirectional formatting
// characters (Bidi_Control: overrides, embeddings, isolates and marks) that
// make text read differently from what it is.
func checkStrictJSON(body []byte) error {
	if !utf8.Valid(body) {
		return &SyntaxError{Detail: "request body is not valid UTF-8"}
	}
	sc := strictScanner{b: body}
	sc.space()
	if sc.i == len(sc.b) {
		return nil // an empty body; the decoder reports it
	}
	if err := sc.value(0); err != nil {
		if err == errMalformed {
			return nil // the decoder reports it with its position
		}
		return err
	}
	if sc.space(); sc.i < len(sc.b) {
		return &SyntaxError{Detail: "request body must hold a single JSON object and nothing after it"}
	}
	return nil
}

// errMalformed is JSON that is not well formed: the checks stop and leave
// it to encoding/json, which tells where.
var errMalformed = errors.New("malformed JSON")

// maxDepth is encoding/json's limit of nesting.
const maxDepth = 10000

// strictScanner walks a JSON text once, without building its values: the
// checks of checkStrictJSON take 0.6 µs and 3 allocations for a checkout's
// body, where walking it with encoding/json's Decoder.Token took 10.5 µs
// and 92 (BenchmarkCheckStrictJSON, 2026-12-03). It takes exactly the
// grammar of RFC 8259; what it does not take is errMalformed.
type strictScanner struct {
	b    []byte
	i    int
	path []pathStep // the containers around the value at i
	tmp  []byte     // the last string's text: the body's bytes, or unescaped
	// escaped tells that tmp is the string unescaped, in a buffer the next
	// string reuses.
	escaped bool
	buf     []byte // tmp's buffer for unescaped strings
}

// pathStep is one container around the current value: an object's current
// key, or an array's current index.
type pathStep struct {
	object bool
	key    []byte
	index  int
}

// field is where the current value is, as FieldError names it:
// "items[0].price".
func (sc *strictScanner) field() string {
	var b strings.Builder
	for _, p := range sc.path {
		switch {
		case p.object && len(p.key) > 0:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.Write(p.key)
		case !p.object:
			fmt.Fprintf(&b, "[%d]", p.index)
		}
	}
	return b.String()
}

func (sc *strictScanner) space() {
	for sc.i < len(sc.b) {
		switch sc.b[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// value reads one value at i (after any space).
func (sc *strictScanner) value(depth int) error {
	if sc.i == len(sc.b) {
		return errMalformed
	}
	switch c := sc.b[sc.i]; {
	case c == '{':
		return sc.object(depth + 1)
	case c == '[':
		return sc.array(depth + 1)
	case c == '"':
		clean, err := sc.str()
		if err == nil && !clean {
			return &ValidationError{Fields: []web.FieldError{{Field: sc.field(), Message: "must not contain control or bidirectional formatting characters"}}}
		}
		return err
	case c == '-' || c >= '0' && c <= '9':
		return sc.number()
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if len(sc.b)-sc.i >= len(lit) && string(sc.b[sc.i:sc.i+len(lit)]) == lit {
				sc.i += len(lit)
				return nil
			}
		}
		return errMalformed
	}
}

func (sc *strictScanner) object(depth int) error {
	at, empty, err := sc.open(depth, pathStep{object: true}, '}')
	if empty || err != nil {
		return err
	}
	var (
		few  [8][]byte
		keys = few[:0] // the object's keys, unescaped
		seen map[string]bool
	)
	for {
		if sc.i == len(sc.b) || sc.b[sc.i] != '"' {
			return errMalformed
		}
		sc.path[at].key = nil // a bad key is named by its object
		clean, err := sc.str()
		if err != nil {
			return err
		}
		if !clean {
			return &ValidationError{Fields: []web.FieldError{{Field: sc.field(), Message: "has a key with control or bidirectional formatting characters"}}}
		}
		key := sc.tmp
		if sc.escaped {
			key = bytes.Clone(key) // the next string reuses the buffer
		}
		sc.path[at].key = key
		dup := false
		if seen != nil {
			dup = seen[string(key)]
			seen[string(key)] = true
		} else {
			for _, k := range keys {
				dup = dup || bytes.Equal(k, key)
			}
			if keys = append(keys, key); len(keys) > 16 {
				seen = make(map[string]bool, 2*len(keys))
				for _, k := range keys {
					seen[string(k)] = true
				}
			}
		}
		if dup {
			return &SyntaxError{Detail: fmt.Sprintf("the key %q appears twice", sc.field()), Field: sc.field()}
		}
		if sc.space(); sc.i == len(sc.b) || sc.b[sc.i] != ':' {
			return errMalformed
		}
		sc.i++
		sc.space()
		if err := sc.value(depth); err != nil {
			return err
		}
		if done, err := sc.after(at, '}'); done || err != nil {
			return err
		}
	}
}

func (sc *strictScanner) array(depth int) error {
	at, empty, err := sc.open(depth, pathStep{}, ']')
	if empty || err != nil {
		return err
	}
	for {
		if err := sc.value(depth); err != nil {
			return err
		}
		if done, err := sc.after(at, ']'); done || err != nil {
			return err
		}
		sc.path[at].index++
	}
}

// open enters the container at i (its opening character), whose path step
// is step and whose closing character is end. empty tells that it closed
// at once (and was left).
func (sc *strictScanner) open(depth int, step pathStep, end byte) (at int, empty bool, err error) {
	if depth > maxDepth {
		return 0, false, errMalformed
	}
	sc.i++
	sc.path = append(sc.path, step)
	at = len(sc.path) - 1
	sc.space()
	if sc.i < len(sc.b) && sc.b[sc.i] == end {
		sc.i++
		sc.path = sc.path[:at]
		return at, true, nil
	}
	return at, false, nil
}

// after reads what follows an element of the container at path step at: a
// comma (more to come) or its closing character end (done, and left).
func (sc *strictScanner) after(at int, end byte) (done bool, err error) {
	sc.space()
	if sc.i == len(sc.b) {
		return false, errMalformed
	}
	switch sc.b[sc.i] {
	case ',':
		sc.i++
		sc.space()
		return false, nil
	case end:
		sc.i++
		sc.path = sc.path[:at]
		return true, nil
	}
	return false, errMalformed
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
func (sc *strictScanner) number() error {
	b, i := sc.b, sc.i
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return errMalformed
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return errMalformed
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return errMalformed
		}
	}
	sc.i = i
	return nil
}

// str reads the string at i and reports whether its text (unescaped) is
// free of control and bidirectional formatting characters; tmp then holds
// that text until the next string. The body is valid UTF-8 (checked first).
func (sc *strictScanner) str() (clean bool, err error) {
	b := sc.b
	sc.i++ // "
	start, escaped := sc.i, false
	clean = true
	defer func() { sc.escaped = escaped }()
	for i := sc.i; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			if escaped {
				sc.tmp = append(sc.tmp, b[start:i]...)
				sc.buf = sc.tmp
			} else {
				sc.tmp = b[sc.i:i] // no copy: the body's own bytes
			}
			sc.i = i + 1
			return clean, nil
		case c < 0x20:
			return false, errMalformed // a raw control character
		case c == '\\':
			if !escaped {
				sc.tmp, escaped = append(sc.buf[:0], b[start:i]...), true
			} else {
				sc.tmp = append(sc.tmp, b[start:i]...)
			}
			r, n := unescape(b[i:])
			if n == 0 {
				return false, errMalformed
			}
			clean = clean && cleanRune(r)
			sc.tmp = utf8.AppendRune(sc.tmp, r)
			i += n
			start = i
		case c < utf8.RuneSelf:
			clean = clean && c != 0x7f
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			clean = clean && cleanRune(r)
			i += n
		}
	}
	return false, errMalformed // not closed
}

// unescape decodes the escape at the start of b (a backslash) as
// encoding/json does: a surrogate pair is one rune, a lone surrogate is
// U+FFFD. n is the escape's length, 0 when it is not one.
func unescape(b []byte) (r rune, n int) {
	if len(b) < 2 {
		return 0, 0
	}
	switch b[1] {
	case '"', '\\', '/':
		return rune(b[1]), 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r = hex4(b[2:])
		if r < 0 {
			return 0, 0
		}
		if utf16.IsSurrogate(r) {
			if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
				if r2 := hex4(b[8:]); r2 >= 0 {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						return dec, 12
					}
				}
			}
			return utf8.RuneError, 6
		}
		return r, 6
	}
	return 0, 0
}

// hex4 is the value of four hex digits at the start of b, or -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// cleanRune reports whether r is neither a control (Unicode Cc) nor a
// bidirectional formatting character.
func cleanRune(r rune) bool {
	return !unicode.Is(unicode.Cc, r) && !unicode.Is(unicode.Bidi_Control, r)
}

// validEmail accepts what every SMTP relay delivers without SMTPUTF8: an
// ASCII dot-atom local part (at most 64 characters) and a domain name that
// can exist on the internet: at least two labels of letters, digits and
// inner hyphens (at most 63 each, 253 in all) under an alphabetic top-level
// label, so no single-label hosts, IP literals, quoted local parts or
// comments. Internationalized addresses are refused rather than sent with
// SMTPUTF8, which not every relay offers; an IDN domain works in its
// punycode (xn--) form.
func validEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || len(s) > 254 || !validLocalPart(local) || len(domain) > 253 {
		return false
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlnum(c) && c != '-' {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	for i := 0; i < len(tld); i++ {
		if !isAlpha(tld[i]) && !strings.HasPrefix(tld, "xn--") {
			return false
		}
	}
	return len(tld) >= 2
}

// validLocalPart is RFC 5321's dot-string: atoms of letters, digits and
// !#$%&'*+-/=?^_`{|}~ joined by single dots.
func validLocalPart(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for atom := range strings.SplitSeq(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if c := atom[i]; !isAlnum(c) && !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", rune(c)) {
				return false
			}
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }
