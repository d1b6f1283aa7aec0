package main

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/web"
)

// waker is told about every committed order so the outbox relay publishes
// its event at once instead of at the next poll.
type waker interface{ Wake() }

// NewServer returns the order service's HTTP handler.
func NewServer(log *slog.Logger, metrics *telemetry.Metrics, store *Store, relay waker, health web.Health) http.Handler {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		web.WriteProblem(w, r, http.StatusNotFound, "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		web.WriteProblem(w, r, http.StatusMethodNotAllowed, "method not allowed on this endpoint")
	})
	addRoutes(r, log, store, relay, health)
	return web.Observed(log, metrics, r)
}
