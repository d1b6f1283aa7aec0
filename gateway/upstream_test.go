package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/web"
)

// keyRecorder is an order service stand-in that records the idempotency
// keys it is sent and drops the connection instead of answering the first
// `drop` checkouts (after it "wrote" them).
type keyRecorder struct {
	mu   sync.Mutex
	keys []string
	drop int
}

func (k *keyRecorder) server(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			web.WriteJSON(w, 200, map[string]string{"status": "healthy"})
			return
		}
		_, _ = io.ReadAll(r.Body)
		k.mu.Lock()
		k.keys = append(k.keys, r.Header.Get(IdempotencyKeyHeader))
		n := len(k.keys)
		k.mu.Unlock()
		if n <= k.drop {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		if n > 1 {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		web.WriteJSON(w, 201, map[string]any{"id": 42, "status": "pending"})
	}))
	t.Cleanup(s.Close)
	return s
}

func (k *keyRecorder) seen() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.keys...)
}

func checkoutNoKey(t *testing.T, gw string) (*http.Response, web.Problem) {
	t.Helper()
	resp, err := http.Post(gw+"/api/checkout", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p web.Problem
	if resp.StatusCode >= 400 {
		_ = json.NewDecoder(resp.Body).Decode(&p)
	}
	return resp, p
}

func TestCheckoutLostAnswerIsRetriedWithTheSameKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		drop   int
		status int
	}{
		{"OKLostOnce", 1, 201},
		{"ErrLostEveryTime", 3, 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &keyRecorder{drop: tt.drop}
			order := rec.server(t)
			gw := startGateway(t, Config{OrderServiceURL: order.URL, UpstreamAttempts: 3, BreakerFailures: 10})
			resp, p := checkoutNoKey(t, gw)
			keys := rec.seen()
			if resp.StatusCode != tt.status || len(keys) < 2 {
				t.Fatalf("got %d after %d calls, want %d after a retry", resp.StatusCode, len(keys), tt.status)
			}
			for _, k := range keys {
				if k == "" || k != keys[0] {
					t.Fatalf("the calls carried keys %q, want one key made by the gateway", keys)
				}
			}
			if got := resp.Header.Get(IdempotencyKeyHeader); got != keys[0] {
				t.Fatalf("the client was told key %q, the order service got %q", got, keys[0])
			}
			if tt.status == 504 && !strings.Contains(p.Detail, "Idempotency-Key") {
				t.Fatalf("504 detail %q does not tell the client how to retry safely", p.Detail)
			}
		})
	}
}

// A client's own key is passed on unchanged, on every attempt.
func TestCheckoutKeepsTheClientsKey(t *testing.T) {
	t.Parallel()
	rec := &keyRecorder{drop: 1}
	gw := startGateway(t, Config{OrderServiceURL: rec.server(t).URL, UpstreamAttempts: 3, BreakerFailures: 10})
	req, _ := http.NewRequest(http.MethodPost, gw+"/api/checkout", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(IdempotencyKeyHeader, "client-key-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if keys := rec.seen(); resp.StatusCode != 201 || len(keys) != 2 || keys[0] != "client-key-1" || keys[1] != "client-key-1" {
		t.Fatalf("got %d, keys %q", resp.StatusCode, keys)
	}
}

// Against an order service that hangs, the breaker opens after a few
// timeouts and checkouts are refused at once with 503 (nothing was sent);
// once the service answers again, the breaker half-opens, lets a call
// through and closes.
func TestBreakerOpensAndCloses(t *testing.T) {
	t.Parallel()
	var hung atomic.Bool
	hung.Store(true)
	release := make(chan struct{})
	var calls atomic.Int32
	order := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			calls.Add(1)
			if hung.Load() {
				select {
				case <-r.Context().Done():
				case <-release:
				}
				return
			}
		}
		web.WriteJSON(w, 201, map[string]any{"id": 42})
	}))
	t.Cleanup(func() { close(release); order.Close() })
	gw := startGateway(t, Config{OrderServiceURL: order.URL, UpstreamTimeout: 100 * time.Millisecond,
		UpstreamAttempts: 1, BreakerFailures: 3, BreakerOpenTimeout: 500 * time.Millisecond})

	for range 3 {
		if resp, _ := checkoutNoKey(t, gw); resp.StatusCode != 504 {
			t.Fatalf("checkout against a hung order service = %d, want 504", resp.StatusCode)
		}
	}
	before := calls.Load()
	resp, p := checkoutNoKey(t, gw)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || calls.Load() != before {
		t.Fatalf("with the breaker open: %d %q, Retry-After %q, %d calls reached the order service",
			resp.StatusCode, p.Detail, resp.Header.Get("Retry-After"), calls.Load()-before)
	}
	if h, _ := health(t, gw); h.Breakers["order-service"] != "open" {
		t.Fatalf("health shows breaker %q, want open", h.Breakers["order-service"])
	}

	hung.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := checkoutNoKey(t, gw)
		if resp.StatusCode == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkouts still fail (%d) after the order service came back", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h, _ := health(t, gw); h.Breakers["order-service"] != "closed" {
		t.Fatalf("health shows breaker %q, want closed", h.Breakers["order-service"])
	}
}

// health reads the gateway's /health and returns it with its status.
func health(t *testing.T, gw string) (healthAnswer, int) {
	t.Helper()
	resp, err := http.Get(gw + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h healthAnswer
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h, resp.StatusCode
}
