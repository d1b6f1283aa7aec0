package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

// created is the 201 answer with the order's access token.
type created struct {
	Order
	AccessToken string `json:"access_token"`
}

func checkoutAs(t *testing.T, url string, headers map[string]string, body string) (*http.Response, created) {
	t.Helper()
	resp, b := testenv.Send(t, http.MethodPost, url+"/orders", headers, body)
	var c created
	_ = json.Unmarshal(b, &c)
	return resp, c
}

func getWith(t *testing.T, url string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	return testenv.Send(t, http.MethodGet, url, headers, "")
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// An order is read only with its access token: none is 401, another
// order's is 404 like an unknown id, its own is 200. The token is at least
// 128 bits, kept only as a hash, and a replay returns the same one.
func TestOrderAccessToken(t *testing.T) {
	t.Parallel()
	svc := startService(t, testenv.Database(t), testenv.VHost(t))

	resp, a := checkoutAs(t, svc.URL, map[string]string{IdempotencyKeyHeader: "token-key-1"}, seedBody)
	if resp.StatusCode != http.StatusCreated || a.ID == 0 {
		t.Fatalf("checkout: %d %+v", resp.StatusCode, a)
	}
	raw, err := base64.RawURLEncoding.DecodeString(a.AccessToken)
	if err != nil || len(raw) < 16 {
		t.Fatalf("access_token %q is not at least 128 bits of base64url (%v)", a.AccessToken, err)
	}
	_, b := checkoutAs(t, svc.URL, nil, seedBody)
	if b.AccessToken == "" || b.AccessToken == a.AccessToken {
		t.Fatalf("second order's token %q, first %q", b.AccessToken, a.AccessToken)
	}

	orderURL := fmt.Sprintf("%s/orders/%d", svc.URL, a.ID)
	unknown, unknownBody := getWith(t, svc.URL+"/orders/99999999", bearer(a.AccessToken))
	if unknown.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown order with a token = %d", unknown.StatusCode)
	}
	tests := []struct {
		name    string
		headers map[string]string
		status  int
	}{
		{"ErrNoToken", nil, http.StatusUnauthorized},
		{"ErrNotBearer", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, http.StatusUnauthorized},
		{"ErrOtherOrdersToken", bearer(b.AccessToken), http.StatusNotFound},
		{"ErrGarbageToken", bearer("x" + a.AccessToken), http.StatusNotFound},
		{"ErrUserHeaderOfGuestOrder", map[string]string{web.UserHeader: "1"}, http.StatusNotFound},
		{"OK", bearer(a.AccessToken), http.StatusOK},
		{"OKLowercaseScheme", map[string]string{"Authorization": "bearer " + a.AccessToken}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := getWith(t, orderURL, tt.headers)
			if resp.StatusCode != tt.status {
				t.Fatalf("GET = %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			switch tt.status {
			case http.StatusUnauthorized:
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || resp.Header.Get("Content-Type") != web.ProblemContentType {
					t.Fatalf("401 with WWW-Authenticate %q, Content-Type %q", resp.Header.Get("WWW-Authenticate"), resp.Header.Get("Content-Type"))
				}
			case http.StatusNotFound:
				// The same answer as for an unknown id, but for the id.
				want := strings.ReplaceAll(string(unknownBody), "99999999", fmt.Sprint(a.ID))
				if got := withoutRequestID(t, body); got != withoutRequestID(t, []byte(want)) {
					t.Fatalf("404 differs from an unknown order's:\n%s\n%s", got, want)
				}
			case http.StatusOK:
				var o created
				if err := json.Unmarshal(body, &o); err != nil || o.ID != a.ID || o.AccessToken != "" {
					t.Fatalf("GET answered %s", body)
				}
			}
		})
	}

	again, replay := checkoutAs(t, svc.URL, map[string]string{IdempotencyKeyHeader: "token-key-1"}, seedBody)
	if again.Header.Get("Idempotent-Replayed") != "true" || replay.ID != a.ID || replay.AccessToken != a.AccessToken {
		t.Fatalf("replay: id %d token %q, first id %d token %q", replay.ID, replay.AccessToken, a.ID, a.AccessToken)
	}

	// Only a hash is stored: the token itself is in no row.
	sum := sha256.Sum256([]byte(a.AccessToken))
	if n := count(t, svc.DBURL, fmt.Sprintf(`SELECT count(*) FROM order_access WHERE order_id = %d AND token_hash = '\x%s'`, a.ID, hex.EncodeToString(sum[:]))); n != 1 {
		t.Fatalf("order_access rows with the token's hash = %d, want 1", n)
	}
	for _, table := range []string{"orders", "order_access", "outbox", "order_secrets"} {
		q := fmt.Sprintf(`SELECT count(*) FROM %s t WHERE strpos(t::text, '%s') > 0 OR strpos(t::text, '%x') > 0`, table, a.AccessToken, raw)
		if n := count(t, svc.DBURL, q); n != 0 {
			t.Fatalf("%s holds the token in the clear", table)
		}
	}
}

func withoutRequestID(t *testing.T, b []byte) string {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	delete(p, "request_id")
	out, _ := json.Marshal(p)
	return string(out)
}

// A signed-in customer's checkout (the gateway names the JWT subject in
// X-User-ID) takes the user id from it and refuses a body naming someone
// else; the customer reads their own orders, by id and as a list, and no
// one else's.
func TestSignedInCustomer(t *testing.T) {
	t.Parallel()
	svc := startService(t, testenv.Database(t), testenv.VHost(t))
	as := func(user string) map[string]string { return map[string]string{web.UserHeader: user} }

	noUser := `{"user_email":"test@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`
	resp, mine := checkoutAs(t, svc.URL, as("42"), noUser)
	if resp.StatusCode != http.StatusCreated || mine.UserID != 42 || mine.AccessToken == "" {
		t.Fatalf("checkout as 42 without user_id: %d %+v", resp.StatusCode, mine)
	}
	resp, same := checkoutAs(t, svc.URL, as("42"), strings.Replace(seedBody, `"user_id":1`, `"user_id":42`, 1))
	if resp.StatusCode != http.StatusCreated || same.UserID != 42 {
		t.Fatalf("checkout as 42 with user_id 42: %d", resp.StatusCode)
	}
	// A guest order that claims to be user 42's is not theirs.
	_, guest := checkoutAs(t, svc.URL, nil, strings.Replace(seedBody, `"user_id":1`, `"user_id":42`, 1))
	_, other := checkoutAs(t, svc.URL, as("7"), noUser)

	before := count(t, svc.DBURL, `SELECT count(*) FROM orders`)
	resp, _ = checkoutAs(t, svc.URL, as("42"), seedBody) // body says user 1
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != web.ProblemContentType {
		t.Fatalf("checkout as 42 naming user 1 = %d %s, want 403 problem", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if n := count(t, svc.DBURL, `SELECT count(*) FROM orders`); n != before {
		t.Fatalf("a refused checkout wrote an order")
	}
	if resp, _ := checkoutAs(t, svc.URL, as("abc"), seedBody); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed %s = %d, want 400", web.UserHeader, resp.StatusCode)
	}

	for id, want := range map[int64]int{mine.ID: 200, same.ID: 200, guest.ID: 404, other.ID: 404} {
		if resp, body := getWith(t, fmt.Sprintf("%s/orders/%d", svc.URL, id), as("42")); resp.StatusCode != want {
			t.Errorf("user 42 GET order %d = %d, want %d: %s", id, resp.StatusCode, want, body)
		}
	}

	resp, body := getWith(t, svc.URL+"/orders", as("42"))
	var list struct {
		Orders []Order `json:"orders"`
	}
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if len(list.Orders) != 2 || list.Orders[0].ID != same.ID || list.Orders[1].ID != mine.ID {
		t.Fatalf("user 42's list: %s, want orders %d and %d", body, same.ID, mine.ID)
	}
	if resp, _ := getWith(t, svc.URL+"/orders", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("list without a user = %d, want 401", resp.StatusCode)
	}
}

// Replicas share the token key: the database's own, or ACCESS_TOKEN_SECRET
// when set. A replay on another replica returns the same token, and a token
// opens the order on every replica.
func TestAccessTokenKeyShared(t *testing.T) {
	t.Parallel()
	for name, secret := range map[string]string{"DatabaseKey": "", "Secret": strings.Repeat("s", 32)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db, amqpURL := testenv.Database(t), testenv.VHost(t)
			withSecret := func(c *Config) { c.AccessTokenSecret = secret }
			one, two := startService(t, db, amqpURL, withSecret), startService(t, db, amqpURL, withSecret)
			key := map[string]string{IdempotencyKeyHeader: "shared-key"}
			_, a := checkoutAs(t, one.URL, key, seedBody)
			resp, b := checkoutAs(t, two.URL, key, seedBody)
			if resp.Header.Get("Idempotent-Replayed") != "true" || a.AccessToken == "" || b.AccessToken != a.AccessToken {
				t.Fatalf("replay on the other replica: token %q, first %q", b.AccessToken, a.AccessToken)
			}
			if resp, _ := getWith(t, fmt.Sprintf("%s/orders/%d", two.URL, a.ID), bearer(a.AccessToken)); resp.StatusCode != 200 {
				t.Fatalf("token on the other replica = %d", resp.StatusCode)
			}
			if secret != "" {
				conn, err := pgx.Connect(context.Background(), db)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(context.Background())
				var nonce []byte
				if err := conn.QueryRow(context.Background(), `SELECT nonce FROM order_access WHERE order_id = $1`, a.ID).Scan(&nonce); err != nil {
					t.Fatal(err)
				}
				if deriveToken([]byte(secret), a.ID, nonce) != a.AccessToken {
					t.Fatal("the token is not derived with ACCESS_TOKEN_SECRET")
				}
			}
		})
	}
}
