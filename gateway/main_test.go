package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

// The gateway is tested here against stand-ins for the services it calls,
// so that each failure mode (down, slow, unhealthy) can be produced on
// demand; the end-to-end tests in e2e/ run it against the real services.

func startGateway(t *testing.T, cfg Config) string {
	t.Helper()
	cfg.Port = "0"
	if cfg.UpstreamTimeout == 0 {
		cfg.UpstreamTimeout = 2 * time.Second
	}
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = 500 * time.Millisecond
	}
	cfg.ShutdownTimeout = 5 * time.Second
	return testenv.Run(t, func(ctx context.Context, listening func(net.Addr)) error {
		return run(ctx, cfg, io.Discard, listening)
	})
}

// upstream records what the gateway sent and answers like the order service.
type upstream struct {
	mu       sync.Mutex
	requests []*http.Request
	bodies   []string
}

func (u *upstream) server(t *testing.T, delay time.Duration) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.requests, u.bodies = append(u.requests, r), append(u.bodies, string(b))
		u.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		switch {
		case r.URL.Path == "/health" || r.URL.Path == "/readyz":
			web.WriteJSON(w, 200, map[string]string{"status": "healthy"})
		case r.Method == http.MethodPost && r.URL.Path == "/orders":
			w.Header().Set("Location", "/orders/42")
			web.WriteJSON(w, 201, map[string]any{"id": 42, "status": "pending"})
		case r.URL.Path == "/orders/42":
			web.WriteJSON(w, 200, map[string]any{"id": 42})
		default:
			web.WriteProblem(w, r, 404, "order does not exist")
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

func TestCheckoutForwards(t *testing.T) {
	t.Parallel()
	var up upstream
	order := up.server(t, 0)
	gw := startGateway(t, Config{OrderServiceURL: order.URL, PaymentServiceURL: order.URL, EmailServiceURL: order.URL})

	body := `{"user_id":1,"user_email":"test@example.com","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}`
	req, _ := http.NewRequest(http.MethodPost, gw+"/api/checkout", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", "req-from-client-1")
	req.Header.Set("Idempotency-Key", "key-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Location") != "/api/orders/42" || resp.Header.Get("X-Request-ID") != "req-from-client-1" {
		t.Fatalf("status %d, Location %q, request id %q", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("X-Request-ID"))
	}
	up.mu.Lock()
	got, gotBody := up.requests[0], up.bodies[0]
	up.mu.Unlock()
	if got.URL.Path != "/orders" || gotBody != body || got.Header.Get("X-Request-ID") != "req-from-client-1" ||
		got.Header.Get("Content-Type") != "application/json" || got.Header.Get("Idempotency-Key") != "key-1" {
		t.Fatalf("upstream got %s %s id=%q body=%q", got.Method, got.URL.Path, got.Header.Get("X-Request-ID"), gotBody)
	}

	// Without a request id the gateway makes one and passes it on.
	req, _ = http.NewRequest(http.MethodGet, gw+"/api/orders/42", nil)
	req.Header.Set("Authorization", "Bearer token-of-42")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-ID")
	up.mu.Lock()
	upID := up.requests[len(up.requests)-1].Header.Get("X-Request-ID")
	up.mu.Unlock()
	if resp.StatusCode != 200 || id == "" || upID != id {
		t.Fatalf("GET: status %d, request id %q, upstream saw %q", resp.StatusCode, id, upID)
	}
}

func TestGatewayErrors(t *testing.T) {
	t.Parallel()
	var up upstream
	slow := up.server(t, 3*time.Second)
	tests := []struct {
		name   string
		order  string
		method string
		path   string
		body   string
		status int
	}{
		{"ErrOrderServiceDown", deadURL(t), "POST", "/api/checkout", `{}`, 503},
		{"ErrOrderServiceSlow", slow.URL, "POST", "/api/checkout", `{}`, 504},
		{"ErrBodyTooLarge", deadURL(t), "POST", "/api/checkout", strings.Repeat("x", 1<<20+1), 413},
		{"ErrBadOrderID", deadURL(t), "GET", "/api/orders/x", ``, 400},
		{"ErrUnknownRoute", deadURL(t), "GET", "/api/nope", ``, 404},
		{"ErrWrongMethod", deadURL(t), "DELETE", "/api/checkout", ``, 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gw := startGateway(t, Config{OrderServiceURL: tt.order, UpstreamTimeout: 500 * time.Millisecond})
			req, _ := http.NewRequest(tt.method, gw+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer some-token")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p web.Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != web.ProblemContentType || p.Detail == "" {
				t.Fatalf("got %d %q %+v, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), p, tt.status)
			}
		})
	}
}

// An order service that dies halfway through its answer must not reach the
// client as a complete (truncated) answer: the gateway resets the connection.
func TestCheckoutUpstreamCutMidBody(t *testing.T) {
	t.Parallel()
	order := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(201)
		_, _ = io.WriteString(w, `{"id":42,"status":"pen`)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(order.Close)
	gw := startGateway(t, Config{OrderServiceURL: order.URL})
	resp, err := http.Post(gw+"/api/checkout", "application/json", strings.NewReader(`{}`))
	if err != nil {
		return // reset before the headers arrived: also not a complete answer
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("client read a complete %d answer %q from a cut upstream body", resp.StatusCode, b)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	var up upstream
	ok := up.server(t, 0).URL
	slow := up.server(t, 5*time.Second).URL
	tests := []struct {
		name            string
		payment, email  string
		status          int
		overall         string
		paymentState    string
		emailState      string
		orderServiceURL string
	}{
		{"OK", ok, ok, 200, "healthy", "healthy", "healthy", ok},
		{"ErrPaymentDown", deadURL(t), ok, 503, "degraded", "unreachable", "healthy", ok},
		{"ErrEmailSlow", ok, slow, 503, "degraded", "healthy", "unreachable", ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gw := startGateway(t, Config{OrderServiceURL: tt.orderServiceURL, PaymentServiceURL: tt.payment, EmailServiceURL: tt.email})
			start := time.Now()
			h, status := health(t, gw)
			if status != tt.status || h.Status != tt.overall || h.Gateway != "operational" ||
				h.Services["order-service"] != "healthy" || h.Services["payment-service"] != tt.paymentState ||
				h.Services["email-service"] != tt.emailState || len(h.Services) != 3 {
				t.Fatalf("got %d %+v", status, h)
			}
			// The checks run concurrently under one short timeout.
			if el := time.Since(start); el > 4*time.Second {
				t.Fatalf("health took %v: the checks are not bounded by the health timeout", el)
			}
		})
	}
}
