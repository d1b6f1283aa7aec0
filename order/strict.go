package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"
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
	type frame struct {
		object  bool
		keys    map[string]bool
		key     string // the object's current key
		index   int    // the array's next index
		wantKey bool
	}
	var stack []*frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.object && f.key != "":
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			case !f.object:
				fmt.Fprintf(&b, "[%d]", f.index)
			}
		}
		return b.String()
	}
	// valueDone moves the enclosing container past the value just read.
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		if top := stack[len(stack)-1]; top.object {
			top.wantKey = true
		} else {
			top.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil // an empty body; the decoder reports it
		}
		if err != nil {
			return nil // malformed: the decoder reports it with its position
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				valueDone()
			} else {
				key := tok.(string)
				if !cleanText(key) {
					return &ValidationError{Fields: []web.FieldError{{Field: path(), Message: "has a key with control or bidirectional formatting characters"}}}
				}
				top.key, top.wantKey = key, false
				if top.keys[key] {
					return &SyntaxError{Detail: fmt.Sprintf("the key %q appears twice", path()), Field: path()}
				}
				top.keys[key] = true
			}
		} else {
			switch v := tok.(type) {
			case json.Delim:
				switch v {
				case '{':
					stack = append(stack, &frame{object: true, keys: map[string]bool{}, wantKey: true})
				case '[':
					stack = append(stack, &frame{})
				case ']':
					stack = stack[:len(stack)-1]
					valueDone()
				}
			case string:
				if !cleanText(v) {
					return &ValidationError{Fields: []web.FieldError{{Field: path(), Message: "must not contain control or bidirectional formatting characters"}}}
				}
				valueDone()
			default:
				valueDone()
			}
		}
		if len(stack) == 0 {
			break
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &SyntaxError{Detail: "request body must hold a single JSON object and nothing after it"}
	}
	return nil
}

// cleanText reports whether s has no control or bidirectional formatting
// characters.
func cleanText(s string) bool {
	for _, r := range s {
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Bidi_Control, r) {
			return false
		}
	}
	return true
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
