package main

import (
	"context"
	"net/http"
	"sync"

	"github.com/checkout-demo/checkout/internal/web"
)

// healthAnswer is the seed's shape of the aggregated health, with the state
// of the circuit breaker in front of each service the gateway forwards to.
type healthAnswer struct {
	Status   string            `json:"status"`
	Gateway  string            `json:"gateway"`
	Services map[string]string `json:"services"`
	Breakers map[string]string `json:"circuit_breakers,omitempty"`
}

func services(cfg Config) map[string]string {
	return map[string]string{
		"order-service":   cfg.OrderServiceURL,
		"payment-service": cfg.PaymentServiceURL,
		"email-service":   cfg.EmailServiceURL,
	}
}

// handleHealth asks every service's /health at once, each with a short
// timeout, and answers 503 "degraded" when one is not healthy.
func handleHealth(cfg Config, client *http.Client, breaker func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), cfg.HealthTimeout)
		defer cancel()
		ans := healthAnswer{Status: "healthy", Gateway: "operational", Services: map[string]string{},
			Breakers: map[string]string{"order-service": breaker()}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name, url := range services(cfg) {
			wg.Go(func() {
				state := probe(ctx, client, url+"/health")
				mu.Lock()
				defer mu.Unlock()
				ans.Services[name] = state
			})
		}
		wg.Wait()
		code := http.StatusOK
		for _, s := range ans.Services {
			if s != "healthy" {
				ans.Status, code = "degraded", http.StatusServiceUnavailable
			}
		}
		web.WriteJSON(w, code, ans)
	})
}

// probe returns "healthy", "unhealthy" (it answered, but not 200) or
// "unreachable".
func probe(ctx context.Context, client *http.Client, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "unreachable"
	}
	resp, err := client.Do(req)
	if err != nil {
		return "unreachable"
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "unhealthy"
	}
	return "healthy"
}
