package main

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/web"
)

func addRoutes(r chi.Router, log *slog.Logger, cfg Config, client *http.Client, health web.Health) {
	r.Method(http.MethodGet, "/", web.HandleAbout("gateway", r, web.SystemLinks))
	r.Method(http.MethodPost, "/api/checkout", handleCheckout(log, cfg, client))
	r.Method(http.MethodGet, "/api/orders/{id}", handleGetOrder(log, cfg, client))
	r.Method(http.MethodGet, "/health", handleHealth(cfg, client))
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())
}
