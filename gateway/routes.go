package main

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/web"
)

func addRoutes(r chi.Router, log *slog.Logger, cfg Config, client *http.Client, health web.Health) {
	orders := newOrderClient(log, cfg, client)
	r.Method(http.MethodPost, "/api/checkout", handleCheckout(log, orders))
	r.Method(http.MethodGet, "/api/orders/{id}", handleGetOrder(log, orders))
	r.Method(http.MethodGet, "/health", handleHealth(cfg, client, orders.State))
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())
}
