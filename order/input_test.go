package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

// Bodies that encoding/json alone would take are refused too: a key given
// twice (which one counts?), data after the object, control and
// bidirectional formatting characters (a name that reads differently than it
// is), invalid UTF-8, and email addresses that are not plain ASCII with a
// domain that can exist. Nothing is written or published.
func TestCheckoutStrictInput(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	svc := startService(t, testenv.Database(t), amqpURL)
	q := testenv.Watch(t, amqpURL, "#")

	email := func(e string) string {
		b, _ := json.Marshal(e)
		return `{"user_id":1,"user_email":` + string(b) + `,"items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`
	}
	tests := []struct {
		name   string
		body   string
		status int
		field  string
	}{
		{"ErrDuplicateKey", `{"user_id":1,"user_id":2,"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 400, "user_id"},
		{"ErrDuplicateNestedKey", `{"user_id":1,"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00","price":"0.01"}]}`, 400, "items[0].price"},
		{"ErrDuplicateUnknownKey", `{"user_id":1,"user_email":"a@example.com","x":1,"x":2,"items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 400, "x"},
		{"ErrTrailingBrace", seedBody + `}`, 400, ""},
		{"ErrTrailingBracket", seedBody + `]`, 400, ""},
		{"ErrTrailingGarbage", seedBody + ` x`, 400, ""},
		{"ErrInvalidUTF8", `{"user_id":1,"user_email":"a@example.com","note":"` + "\xff" + `","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 400, ""},
		{"ErrNulEscaped", email(`a\u0000@example.com`), 422, "user_email"},
		{"ErrControlInEmail", email("a\u0007b@example.com"), 422, "user_email"},
		{"ErrDELInEmail", email("ab\u007f@example.com"), 422, "user_email"},
		{"ErrC1Control", email("a\u0085b@example.com"), 422, "user_email"},
		{"ErrBidiOverride", email("moc.elpmaxe\u202e@evil.com"), 422, "user_email"},
		{"ErrBidiIsolate", email("a\u2066b@example.com"), 422, "user_email"},
		{"ErrBidiInUnknownField", `{"user_id":1,"user_email":"a@example.com","note":"\u202e","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, "note"},
		{"ErrBidiInPrice", `{"user_id":1,"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00\u200f"}]}`, 422, "items[0].price"},
		{"ErrBidiInKey", `{"user_id":1,"user_email":"a@example.com","\u202eid":1,"items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, ""},
		{"ErrNonASCIIEmail", email("jöhn@example.com"), 422, "user_email"},
		{"ErrIDNDomain", email("john@exämple.com"), 422, "user_email"},
		{"ErrSingleLabelDomain", email("root@localhost"), 422, "user_email"},
		{"ErrIPDomain", email("a@127.0.0.1"), 422, "user_email"},
		{"ErrNumericTLD", email("a@example.123"), 422, "user_email"},
		{"ErrLabelHyphen", email("a@-example.com"), 422, "user_email"},
		{"ErrEmptyLabel", email("a@example..com"), 422, "user_email"},
		{"ErrUnderscoreDomain", email("a@ex_ample.com"), 422, "user_email"},
		{"ErrQuotedLocal", email(`"a b"@example.com`), 422, "user_email"},
		{"ErrLocalTooLong", email(strings.Repeat("a", 65) + "@example.com"), 422, "user_email"},
		{"ErrLabelTooLong", email("a@" + strings.Repeat("b", 64) + ".com"), 422, "user_email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(svc.URL+"/orders", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p web.Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatalf("decode problem (status %d): %v", resp.StatusCode, err)
			}
			if resp.StatusCode != tt.status || p.Status != tt.status || p.Detail == "" {
				t.Fatalf("status = %d, want %d: %+v", resp.StatusCode, tt.status, p)
			}
			if tt.field != "" && !slices.ContainsFunc(p.Errors, func(f web.FieldError) bool { return f.Field == tt.field }) {
				t.Fatalf("problem does not name %q: %+v", tt.field, p)
			}
		})
	}
	for _, table := range []string{"orders", "order_items", "outbox"} {
		if n := count(t, svc.DBURL, "SELECT count(*) FROM "+table); n != 0 {
			t.Errorf("%s has %d rows after bad input only", table, n)
		}
	}
	q.None(500 * time.Millisecond)

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
