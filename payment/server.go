package main

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/web"
)

// NewServer returns the payment service's HTTP handler.
func NewServer(log *slog.Logger, metrics *telemetry.Metrics, store *Store, health web.Health) http.Handler {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		web.WriteProblem(w, r, http.StatusNotFound, "no such endpoint")
	})
	addRoutes(r, log, store, health)
	return web.Observed(log, metrics, r)
}

func handleGetPayment(log *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := web.OrderID(w, r, "orderID")
		if !ok {
			return
		}
		p, err := store.ByOrder(r.Context(), id)
		switch {
		case errors.Is(err, ErrNotFound):
			web.WriteProblem(w, r, http.StatusNotFound, "no payment for order "+strconv.FormatInt(id, 10))
		case err != nil:
			postgres.WriteError(w, r, log, "the payment database", "get payment", err)
		default:
			web.WriteJSON(w, http.StatusOK, p)
		}
	})
}
