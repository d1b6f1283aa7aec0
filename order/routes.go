package main

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
)

func addRoutes(r chi.Router, log *slog.Logger, store *Store, relay waker, health web.Health) {
	r.Method(http.MethodGet, "/", worker.HandleAbout("order", r))
	r.Method(http.MethodPost, "/orders", handleCreateOrder(log, store, relay))
	r.Method(http.MethodGet, "/orders", handleListOrders(log, store))
	r.Method(http.MethodGet, "/orders/{id}", handleGetOrder(log, store))
	r.Method(http.MethodGet, "/health", health.HandleHealth())
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())
}
