package main

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/web"
)

// NewServer returns the gateway's HTTP handler.
func NewServer(log *slog.Logger, metrics *telemetry.Metrics, cfg Config, client *http.Client, health web.Health, auth *authenticator) http.Handler {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		web.WriteProblem(w, r, http.StatusNotFound, "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		web.WriteProblem(w, r, http.StatusMethodNotAllowed, "method not allowed on this endpoint")
	})
	addRoutes(r, log, metrics, cfg, client, health, auth)
	return web.Observed(log, metrics, r)
}

// newClient returns the client for upstream calls: kept-alive connections,
// enough of them for a busy gateway, each exchange on its caller's
// goroutine (see transport), and a dial timeout so a dead upstream fails
// fast. Every call it makes is bounded by its context (UPSTREAM_TIMEOUT,
// HEALTH_TIMEOUT).
func newClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: telemetry.Transport(newTransport(t))}
}
