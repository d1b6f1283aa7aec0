package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/checkout-demo/checkout/internal/web"
)

// healthAnswer is the seed's shape of the aggregated health.
type healthAnswer struct {
	Status   string            `json:"status"`
	Gateway  string            `json:"gateway"`
	Services map[string]string `json:"services"`
	// Breakers is the state of the circuit breaker in front of each
	// service the gateway forwards to ("closed", "open", "half-open").
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
// timeout, and answers 503 "degraded" when one is not healthy. The answer
// is reused for HEALTH_CACHE_TTL, and requests arriving while the services
// are being asked wait for that one fan-out: however often /health is
// called, each service is asked at most once per TTL.
// The breaker's state is read fresh for every answer.
func handleHealth(cfg Config, client *http.Client, breaker func() string) http.Handler {
	var (
		mu     sync.Mutex // held during a fan-out
		cached healthAnswer
		code   int
		at     time.Time
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if at.IsZero() || time.Since(at) >= cfg.HealthCacheTTL {
			cached, code = askServices(cfg, client)
			at = time.Now()
		}
		ans, c := cached, code
		mu.Unlock()
		ans.Breakers = map[string]string{"order-service": breaker()}
		web.WriteJSON(w, c, ans)
	})
}

// askServices does the fan-out. It does not use a request's context: its
// answer serves other requests too.
func askServices(cfg Config, client *http.Client) (healthAnswer, int) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.HealthTimeout)
	defer cancel()
	ans := healthAnswer{Status: "healthy", Gateway: "operational", Services: map[string]string{}}
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
	return ans, code
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
