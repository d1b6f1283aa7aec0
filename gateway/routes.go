package main

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/web"
)

func addRoutes(r chi.Router, log *slog.Logger, cfg Config, client *http.Client, health web.Health, auth *authenticator) {
	orders := newOrderClient(log, cfg, client)
	r.Method(http.MethodGet, "/", web.HandleAbout("gateway", r, web.SystemLinks, nil, nil))
	// Probes are not limited: the orchestrator asks them from one address.
	r.Group(func(r chi.Router) {
		r.Use(guard(log, cfg, auth, newLimiter(cfg.RateLimitRPS, cfg.RateLimitBurst, maxClients)))
		r.Method(http.MethodPost, "/api/checkout", handleCheckout(log, orders))
		r.Method(http.MethodGet, "/api/orders", handleListOrders(log, orders))
		r.Method(http.MethodGet, "/api/orders/{id}", requireCredential(handleGetOrder(log, orders)))
		r.Method(http.MethodGet, "/health", handleHealth(cfg, client, orders.State))
	})
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())
}
