package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Bodies that encoding/json alone would take are refused too: a key given
// twice (which one counts?), data after the object, control and
// bidirectional formatting characters (a name that reads differently than it
// is), invalid UTF-8, and email addresses that are not plain ASCII with a
// domain that can exist. Nothing is written or published.
func TestCheckoutStrictInput(t *testing.T) {
	t.Parallel()
	email := func(e string) string {
		b, _ := json.Marshal(e)
		return `{"user_id":1,"user_email":` + string(b) + `,"items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`
	}
	tests := []badInput{
		{"ErrDuplicateKey", "application/json", `{"user_id":1,"user_id":2,"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 400, "user_id"},
		{"ErrDuplicateNestedKey", "application/json", `{"user_id":1,"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00","price":"0.01"}]}`, 400, "items[0].price"},
		{"ErrDuplicateUnknownKey", "application/json", `{"user_id":1,"user_email":"a@example.com","x":1,"x":2,"items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 400, "x"},
		{"ErrTrailingBrace", "application/json", seedBody + `}`, 400, ""},
		{"ErrTrailingBracket", "application/json", seedBody + `]`, 400, ""},
		{"ErrTrailingGarbage", "application/json", seedBody + ` x`, 400, ""},
		{"ErrInvalidUTF8", "application/json", `{"user_id":1,"user_email":"a@example.com","note":"` + "\xff" + `","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 400, ""},
		{"ErrNulEscaped", "application/json", email(`a\u0000@example.com`), 422, "user_email"},
		{"ErrControlInEmail", "application/json", email("a\u0007b@example.com"), 422, "user_email"},
		{"ErrDELInEmail", "application/json", email("ab\u007f@example.com"), 422, "user_email"},
		{"ErrC1Control", "application/json", email("a\u0085b@example.com"), 422, "user_email"},
		{"ErrBidiOverride", "application/json", email("moc.elpmaxe\u202e@evil.com"), 422, "user_email"},
		{"ErrBidiIsolate", "application/json", email("a\u2066b@example.com"), 422, "user_email"},
		{"ErrBidiInUnknownField", "application/json", `{"user_id":1,"user_email":"a@example.com","note":"\u202e","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, "note"},
		{"ErrBidiInPrice", "application/json", `{"user_id":1,"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00\u200f"}]}`, 422, "items[0].price"},
		{"ErrBidiInKey", "application/json", `{"user_id":1,"user_email":"a@example.com","\u202eid":1,"items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, ""},
		{"ErrNonASCIIEmail", "application/json", email("jöhn@example.com"), 422, "user_email"},
		{"ErrIDNDomain", "application/json", email("john@exämple.com"), 422, "user_email"},
		{"ErrSingleLabelDomain", "application/json", email("root@localhost"), 422, "user_email"},
		{"ErrIPDomain", "application/json", email("a@127.0.0.1"), 422, "user_email"},
		{"ErrNumericTLD", "application/json", email("a@example.123"), 422, "user_email"},
		{"ErrLabelHyphen", "application/json", email("a@-example.com"), 422, "user_email"},
		{"ErrEmptyLabel", "application/json", email("a@example..com"), 422, "user_email"},
		{"ErrUnderscoreDomain", "application/json", email("a@ex_ample.com"), 422, "user_email"},
		{"ErrQuotedLocal", "application/json", email(`"a b"@example.com`), 422, "user_email"},
		{"ErrLocalTooLong", "application/json", email(strings.Repeat("a", 65) + "@example.com"), 422, "user_email"},
		{"ErrLabelTooLong", "application/json", email("a@" + strings.Repeat("b", 64) + ".com"), 422, "user_email"},
	}
	svc := refuses(t, tests)

	// What stays accepted: plain addresses, subdomains, plus and dots in the
	// local part, hyphens inside labels, any letters outside the keys'
	// strings as long as they are not controls (none here), escapes of
	// ordinary characters.
	for _, e := range []string{"test@example.com", "first.last+tag@mail.example.co.uk", "o'brien@ex-ample.io", "A_B-c@x.org"} {
		if resp, b := post(t, svc.URL+"/orders", email(e)); resp.StatusCode != http.StatusCreated {
			t.Errorf("%s refused: %d %s", e, resp.StatusCode, b)
		}
	}
	if resp, b := post(t, svc.URL+"/orders", `{"user_id":1,"user_email":"a\u0040example.com","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`); resp.StatusCode != http.StatusCreated {
		t.Errorf("escaped @ refused: %d %s", resp.StatusCode, b)
	}
}
