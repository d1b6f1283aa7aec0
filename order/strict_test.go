package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/checkout-demo/checkout/internal/web"
)

// FuzzStrictJSONAgreesWithTokens holds checkStrictJSON's scanner to what
// the same checks made by walking encoding/json's tokens decide (the
// implementation it replaced, below as tokenStrictJSON): the same verdict
// (nil, a SyntaxError or a ValidationError) naming the same field, for any
// body. `go test -fuzz FuzzStrictJSONAgreesWithTokens ./order` looks
// further than the seeds.
func FuzzStrictJSONAgreesWithTokens(f *testing.F) {
	for _, s := range []string{
		seedBody, ``, ` `, `{}`, `[]`, `5`, `"x"`, `null`, `true`, `{"a":1}x`, `{"a":1} `, `{"a":1}}`, `{"a":1}]`,
		`{"user_id":1,"user_id":2}`, `{"a":{"b":1,"b":2}}`, `{"a":[{"p":1},{"p":1,"p":2}]}`, `{"a":"\u0061","\u0061":1}`,
		`{"a":1,"\u0061":2}`, `{"a":"\u202e"}`, `{"a":["x","\u0007"]}`, `{"a":"\ud800"}`, `{"a":"\ud800\udc00"}`,
		`{"a":"\ud83d\ude00"}`, `{"a":"\udc00\u202e"}`, `{"a":"\n"}`, `{"a":"\/\\\""}`, `{"\u202e":1}`, `{"x":1,"\u0085":1}`,
		"{\"a\":\"\u2066\"}", "{\"a\":\"\x7f\"}", "{\"a\":\"\xc2\x85\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\x01\"}",
		`{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":1e}`, `{"a":-0.5E+3}`, `{"a":tru}`, `{"a":nul,"a":1}`, `{"a" 1}`, `{"a":1,}`, `[1,]`,
		`{"a":1 "b":2}`, `{"a":[1 2]}`, `{"a":"x`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`, `[[[[[[]]]]]]`, `{"a":[]}`,
		`{"k":1,"k":[` + strings.Repeat(`{"d":1,"d":2},`, 3) + `1]}`, `{` + manyKeys(20, false) + `}`, `{` + manyKeys(20, true) + `}`,
		strings.Repeat("[", 9999) + strings.Repeat("]", 9999),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if bytes.Count(body, []byte("["))+bytes.Count(body, []byte("{")) >= maxDepth {
			return // nested past encoding/json's limit, which each meets at its own token
		}
		got, want := verdict(checkStrictJSON(body)), verdict(tokenStrictJSON(body))
		if got != want {
			t.Fatalf("body %q: scanner says %s, tokens say %s", body, got, want)
		}
	})
}

// BenchmarkCheckStrictJSON is the checks of one checkout's body, with
// the scanner and, for comparison, with encoding/json's tokens.
func BenchmarkCheckStrictJSON(b *testing.B) {
	body := []byte(`{"user_id":1000000123,"user_email":"lt1000000123@example.com","items":[{"product_id":124,"quantity":1,"price":"1299.99"}]}`)
	for _, c := range []struct {
		name  string
		check func([]byte) error
	}{{"scanner", checkStrictJSON}, {"tokens", tokenStrictJSON}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.check(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func manyKeys(n int, dup bool) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	if dup {
		b.WriteString(`,"k3":0`)
	}
	return b.String()
}

// verdict is what a check decided, as the answer tells it.
func verdict(err error) string {
	var (
		syn *SyntaxError
		val *ValidationError
	)
	switch {
	case err == nil:
		return "nil"
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax %q at %q", syn.Detail, syn.Field)
	case errors.As(err, &val):
		return fmt.Sprintf("validation %+v", val.Fields)
	}
	return "error " + err.Error()
}

func allClean(s string) bool {
	for _, r := range s {
		if !cleanRune(r) {
			return false
		}
	}
	return true
}

// tokenStrictJSON is the checks of checkStrictJSON made by walking
// encoding/json's tokens, as the service did until 2026-12-03 (ten times
// slower), except that a bad key is named by its object, as the scanner
// names it.
func tokenStrictJSON(body []byte) error {
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
				top.key = ""
				if !allClean(key) {
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
				if !allClean(v) {
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
