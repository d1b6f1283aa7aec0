package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/kelseyhightower/envconfig"

	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

const testSecret = "a-test-secret-of-at-least-32-bytes!!"

func do(t *testing.T, method, url string, headers map[string]string, body string) *http.Response {
	t.Helper()
	resp, _ := testenv.Send(t, method, url, headers, body)
	return resp
}

func (u *upstream) last(t *testing.T) *http.Request {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.requests) == 0 {
		t.Fatal("the upstream got no request")
	}
	return u.requests[len(u.requests)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.requests)
}

// With RATE_LIMIT_RPS=5 and RATE_LIMIT_BURST=10, 40 back-to-back checkouts
// from one client get at least 15 answers 429 problem+json with
// Retry-After; another client is not affected; the probes are not limited.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	var up upstream
	order := up.server(t, 0)
	gw := startGateway(t, Config{OrderServiceURL: order.URL, PaymentServiceURL: order.URL, EmailServiceURL: order.URL,
		RateLimitRPS: 5, RateLimitBurst: 10, ClientIPHeader: "X-Forwarded-For"})

	limited := 0
	for range 40 {
		resp, err := http.Post(gw+"/api/checkout", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		var p web.Problem
		_ = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
		case http.StatusTooManyRequests:
			limited++
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
				t.Fatalf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
			}
			if resp.Header.Get("Content-Type") != web.ProblemContentType || p.Status != 429 || p.Detail == "" {
				t.Fatalf("429 is not a problem: %s %+v", resp.Header.Get("Content-Type"), p)
			}
		default:
			t.Fatalf("checkout answered %d", resp.StatusCode)
		}
	}
	if limited < 15 {
		t.Fatalf("%d of 40 back-to-back checkouts limited, want at least 15", limited)
	}
	if resp := do(t, "POST", gw+"/api/checkout", map[string]string{"X-Forwarded-For": "203.0.113.9"}, `{}`); resp.StatusCode != 201 {
		t.Fatalf("another client = %d, want 201", resp.StatusCode)
	}
	for range 20 {
		if resp := do(t, "GET", gw+"/livez", nil, ""); resp.StatusCode != 200 {
			t.Fatalf("/livez limited: %d", resp.StatusCode)
		}
	}
}

// The limiter keeps a bounded number of clients; one pushed out starts
// again with a full bucket.
func TestLimiterBounded(t *testing.T) {
	l := newLimiter(1, 1, 100)
	now := time.Now()
	if ok, _ := l.allow("a", now); !ok {
		t.Fatal("first request refused")
	}
	if ok, wait := l.allow("a", now); ok || wait <= 0 {
		t.Fatalf("second request at once: ok=%v wait=%v", ok, wait)
	}
	for i := range 1000 {
		l.allow("c"+strconv.Itoa(i), now)
	}
	if len(l.buckets) != 100 || l.order.Len() != 100 {
		t.Fatalf("%d buckets kept, want 100", len(l.buckets))
	}
	if ok, _ := l.allow("a", now); !ok {
		t.Fatal("a client pushed out did not start again")
	}
}

func TestClientIP(t *testing.T) {
	for _, tt := range []struct{ remote, header, value, want string }{
		{"192.0.2.1:5555", "", "", "192.0.2.1"},
		{"192.0.2.1:5555", "", "198.51.100.7", "192.0.2.1"}, // the header is not trusted unless named
		{"192.0.2.1:5555", "X-Forwarded-For", "1.1.1.1, 198.51.100.7", "198.51.100.7"},
		{"[2001:db8:1:2:3:4:5:6]:5555", "", "", "2001:db8:1:2::/64"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.value != "" {
			r.Header.Set("X-Forwarded-For", tt.value)
		}
		if got := clientIP(r, tt.header); got != tt.want {
			t.Errorf("clientIP(%s, %s=%q) = %q, want %q", tt.remote, tt.header, tt.value, got, tt.want)
		}
	}
}

// Orders are read with a credential: without one the gateway answers 401
// itself; an access token goes to the order service as it came.
func TestGetOrderNeedsCredential(t *testing.T) {
	t.Parallel()
	var up upstream
	order := up.server(t, 0)
	gw := startGateway(t, Config{OrderServiceURL: order.URL})
	resp := do(t, "GET", gw+"/api/orders/42", nil, "")
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") ||
		resp.Header.Get("Content-Type") != web.ProblemContentType || up.count() != 0 {
		t.Fatalf("no token: %d %q %q, upstream asked %d times", resp.StatusCode, resp.Header.Get("WWW-Authenticate"),
			resp.Header.Get("Content-Type"), up.count())
	}
	// A client cannot claim to be a signed-in customer.
	resp = do(t, "GET", gw+"/api/orders/42", map[string]string{web.UserHeader: "42"}, "")
	if resp.StatusCode != 401 || up.count() != 0 {
		t.Fatalf("client's own %s: %d", web.UserHeader, resp.StatusCode)
	}
	resp = do(t, "GET", gw+"/api/orders/42", map[string]string{"Authorization": "Bearer tok-123"}, "")
	if got := up.last(t); resp.StatusCode != 200 || got.Header.Get("Authorization") != "Bearer tok-123" {
		t.Fatalf("with a token: %d, upstream got Authorization %q", resp.StatusCode, got.Header.Get("Authorization"))
	}
	// Without the signed-in mode a JWT is just a wrong access token.
	if resp := do(t, "GET", gw+"/api/orders", map[string]string{"Authorization": "Bearer a.b.c"}, ""); resp.StatusCode != 401 {
		t.Fatalf("list without the signed-in mode = %d, want 401", resp.StatusCode)
	}
}

// In the signed-in mode a valid JWT's subject reaches the order service as
// web.UserHeader (and the token itself does not); a client's own
// web.UserHeader never does; an invalid, expired or foreign token is 401.
func TestJWT(t *testing.T) {
	t.Parallel()
	var up upstream
	order := up.server(t, 0)
	cfg := Config{OrderServiceURL: order.URL, JWTSecret: testSecret, JWTIssuer: "https://shop.example", JWTAudience: "checkout"}
	gw := startGateway(t, cfg)
	mint := func(c Config, sub int64, ttl time.Duration) string {
		tok, err := mintToken(c, sub, ttl, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint(cfg, 42, time.Hour)

	resp := do(t, "POST", gw+"/api/checkout", map[string]string{"Authorization": "Bearer " + good}, `{"user_id":1}`)
	got := up.last(t)
	if resp.StatusCode != 201 || got.Header.Get(web.UserHeader) != "42" || got.Header.Get("Authorization") != "" {
		t.Fatalf("checkout with a JWT: %d, upstream got %s=%q Authorization=%q", resp.StatusCode, web.UserHeader,
			got.Header.Get(web.UserHeader), got.Header.Get("Authorization"))
	}
	do(t, "POST", gw+"/api/checkout", map[string]string{web.UserHeader: "7"}, `{}`)
	if got := up.last(t); got.Header.Get(web.UserHeader) != "" {
		t.Fatalf("a guest's own %s reached the order service: %q", web.UserHeader, got.Header.Get(web.UserHeader))
	}
	resp = do(t, "GET", gw+"/api/orders?mine=1", map[string]string{"Authorization": "Bearer " + good}, "")
	if got := up.last(t); got.URL.Path != "/orders" || got.Header.Get(web.UserHeader) != "42" {
		t.Fatalf("list: %d, upstream got %s %s=%q", resp.StatusCode, got.URL.Path, web.UserHeader, got.Header.Get(web.UserHeader))
	}

	other := cfg
	other.JWTSecret = strings.Repeat("x", 40)
	wrongAud := cfg
	wrongAud.JWTAudience = "elsewhere"
	wrongIss := cfg
	wrongIss.JWTIssuer = "https://evil.example"
	before := up.count()
	for name, tok := range map[string]string{
		"ErrOtherSecret": mint(other, 42, time.Hour),
		"ErrExpired":     mint(cfg, 42, -time.Hour),
		"ErrAudience":    mint(wrongAud, 42, time.Hour),
		"ErrIssuer":      mint(wrongIss, 42, time.Hour),
		"ErrNoneAlg":     noneToken(t),
		"ErrGarbage":     "eyJ.eyJ.sig",
	} {
		resp := do(t, "POST", gw+"/api/checkout", map[string]string{"Authorization": "Bearer " + tok}, `{}`)
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("%s: %d %q, want 401 invalid_token", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	if up.count() != before {
		t.Fatal("a refused token reached the order service")
	}
}

func noneToken(t *testing.T) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "42", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A JWKS URL's RSA keys verify RS256 tokens.
func TestJWKS(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.Copy(w, bytes.NewReader(jwks))
	}))
	t.Cleanup(keys.Close)
	var up upstream
	order := up.server(t, 0)
	gw := startGateway(t, Config{OrderServiceURL: order.URL, JWKSURL: keys.URL})

	sign := func(k *rsa.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "9", "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	resp := do(t, "POST", gw+"/api/checkout", map[string]string{"Authorization": "Bearer " + sign(key)}, `{}`)
	if got := up.last(t); resp.StatusCode != 201 || got.Header.Get(web.UserHeader) != "9" {
		t.Fatalf("RS256 token: %d, upstream %s=%q", resp.StatusCode, web.UserHeader, got.Header.Get(web.UserHeader))
	}
	stranger, _ := rsa.GenerateKey(rand.Reader, 2048)
	if resp := do(t, "POST", gw+"/api/checkout", map[string]string{"Authorization": "Bearer " + sign(stranger)}, `{}`); resp.StatusCode != 401 {
		t.Fatalf("token of another key = %d, want 401", resp.StatusCode)
	}
	// An HS256 token "signed" with the public key must not pass.
	hs, err := mintToken(Config{JWTSecret: testSecret}, 9, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp := do(t, "POST", gw+"/api/checkout", map[string]string{"Authorization": "Bearer " + hs}, `{}`); resp.StatusCode != 401 {
		t.Fatalf("HS256 token in JWKS mode = %d, want 401", resp.StatusCode)
	}
}

func TestTokenCommand(t *testing.T) {
	var out bytes.Buffer
	cfg := Config{JWTSecret: testSecret, JWTAudience: "checkout"}
	if err := tokenCommand(cfg, &out)(context.Background(), []string{"-sub", "42"}); err != nil {
		t.Fatal(err)
	}
	auth, err := newAuthenticator(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sub, err := auth.subject(strings.TrimSpace(out.String())); err != nil || sub != 42 {
		t.Fatalf("minted token: sub %d, %v", sub, err)
	}
	if err := tokenCommand(Config{JWTSecret: "short"}, &out)(context.Background(), []string{"-sub", "42"}); err == nil {
		t.Fatal("minted with a short secret")
	}
	if _, err := newAuthenticator(context.Background(), Config{JWTSecret: "short"}); err == nil {
		t.Fatal("a short HS256 secret was taken")
	}
}

// The public /health is answered from one fan-out per HEALTH_CACHE_TTL.
func TestHealthCached(t *testing.T) {
	t.Parallel()
	var up upstream
	svc := up.server(t, 0).URL
	gw := startGateway(t, Config{OrderServiceURL: svc, PaymentServiceURL: svc, EmailServiceURL: svc, HealthCacheTTL: time.Hour})
	for range 10 {
		if resp := do(t, "GET", gw+"/health", nil, ""); resp.StatusCode != 200 {
			t.Fatalf("/health = %d", resp.StatusCode)
		}
	}
	if n := up.count(); n != 3 {
		t.Fatalf("the services were asked %d times for 10 /health requests, want 3 (once each)", n)
	}
}

// By default every service listens on loopback only.
func TestListensOnLoopbackByDefault(t *testing.T) {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ListenHost != "127.0.0.1" {
		t.Fatalf("LISTEN_HOST defaults to %q", cfg.ListenHost)
	}
	cfg.Port = "0"
	addr := make(chan net.Addr, 1)
	testenv.Run(t, func(ctx context.Context, listening func(net.Addr)) error {
		return run(ctx, cfg, io.Discard, func(a net.Addr) { addr <- a; listening(a) })
	})
	if a := (<-addr).(*net.TCPAddr); !a.IP.IsLoopback() {
		t.Fatalf("listening on %v", a)
	}
}
