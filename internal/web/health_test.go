package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The public /health and /readyz name the failing check but never the
// driver's error (addresses, user names, versions); the error goes to the
// log, once when the check starts failing.
func TestHealthHidesErrors(t *testing.T) {
	secret := `failed to connect to user=order_svc database=order_db: dial tcp 10.1.2.3:5432: connection refused`
	var logs bytes.Buffer
	h := Health{
		Service: "order",
		Ready:   map[string]Check{"postgres": func(context.Context) error { return errors.New(secret) }},
		Extra:   map[string]Check{"rabbitmq": func(context.Context) error { return nil }},
		Log:     slog.New(slog.NewTextHandler(&logs, nil)),
	}
	for _, tt := range []struct {
		name    string
		handler http.Handler
	}{{"health", h.HandleHealth()}, {"readyz", h.HandleReadyz()}} {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 {
				rec := httptest.NewRecorder()
				tt.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+tt.name, nil))
				body, _ := io.ReadAll(rec.Body)
				if rec.Code != http.StatusServiceUnavailable {
					t.Fatalf("status %d", rec.Code)
				}
				if strings.Contains(string(body), "10.1.2.3") || strings.Contains(string(body), "order_svc") {
					t.Fatalf("the public answer shows the driver's error: %s", body)
				}
				if !strings.Contains(string(body), `"postgres":"failing"`) || !strings.Contains(string(body), `"rabbitmq":"ok"`) && tt.name == "health" {
					t.Fatalf("the answer does not name the checks' states: %s", body)
				}
			}
		})
	}
	if n := strings.Count(logs.String(), "10.1.2.3"); n != 2 {
		t.Fatalf("the error was logged %d times, want once per endpoint:\n%s", n, logs.String())
	}
}

// A client's X-Request-ID is kept only when short and printable; anything
// else is replaced by a fresh id.
func TestRequestIDFromClient(t *testing.T) {
	h := Middleware(slog.New(slog.NewTextHandler(io.Discard, nil)), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, RequestID(r.Context()))
	}))
	for _, tt := range []struct {
		name, id string
		kept     bool
	}{
		{"OK", "req-1234_ABC.x", true},
		{"OKLongest", strings.Repeat("a", 128), true},
		{"ErrTooLong", strings.Repeat("a", 129), false},
		{"ErrSpace", "a b", false},
		{"ErrNewline", "a\nb", false},
		{"ErrNonASCII", "aé", false},
		{"ErrBidi", "a\u202eb", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set(RequestIDHeader, tt.id)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Body.String()
			if (got == tt.id) != tt.kept || got == "" || rec.Header().Get(RequestIDHeader) != got {
				t.Fatalf("id %q became %q (header %q), kept = %v", tt.id, got, rec.Header().Get(RequestIDHeader), tt.kept)
			}
		})
	}
}
