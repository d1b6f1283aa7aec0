package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/checkout-demo/checkout/internal/testenv"
)

const edgeSeedBody = `{"user_id":1,"user_email":"test@example.com","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}`

const edgeJWTSecret = "e2e-secret-that-is-at-least-32-bytes-long"

// send makes one request to the gateway as the client at addr (the gateway
// is told to trust X-Forwarded-For, so each part of the test is its own
// client for the rate limit).
func send(t *testing.T, s *System, addr, method, path, auth, body string) (*http.Response, []byte) {
	t.Helper()
	headers := map[string]string{"X-Forwarded-For": addr}
	if auth != "" {
		headers["Authorization"] = "Bearer " + auth
	}
	return testenv.Send(t, method, s.URL("gateway")+path, headers, body)
}

// The edge through the real binaries: the seed's checkout gets an access
// token that alone opens the order; a signed-in customer checks out with a
// JWT, cannot name someone else, and lists their own orders; and with
// RATE_LIMIT_RPS=5 RATE_LIMIT_BURST=10, 40 back-to-back checkouts from one
// client get at least 15 answers 429 with Retry-After.
func TestEdge(t *testing.T) {
	t.Parallel()
	s := fastSystem(t, "")
	s.ServiceEnv["gateway"] = map[string]string{"RATE_LIMIT_RPS": "5", "RATE_LIMIT_BURST": "10",
		"CLIENT_IP_HEADER": "X-Forwarded-For", "AUTH_JWT_HS256_SECRET": edgeJWTSecret, "AUTH_JWT_AUDIENCE": "checkout"}
	s.Up()

	var a, b order
	for i, o := range []*order{&a, &b} {
		resp, body := send(t, s, fmt.Sprintf("192.0.2.%d", i+1), "POST", "/api/checkout", "", edgeSeedBody)
		if err := json.Unmarshal(body, o); err != nil || resp.StatusCode != 201 || o.AccessToken == "" {
			t.Fatalf("seed checkout: %d %s", resp.StatusCode, body)
		}
	}
	path := fmt.Sprintf("/api/orders/%d", a.ID)
	for _, tt := range []struct {
		name, token string
		status      int
	}{{"ErrNoToken", "", 401}, {"ErrOtherOrdersToken", b.AccessToken, 404}, {"OK", a.AccessToken, 200}} {
		resp, body := send(t, s, "192.0.2.10", "GET", path, tt.token, "")
		if resp.StatusCode != tt.status {
			t.Errorf("%s: GET %s = %d, want %d: %s", tt.name, path, resp.StatusCode, tt.status, body)
		}
		if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer")
		}
	}

	jwt := strings.TrimSpace(runCommand(t, "gateway", map[string]string{"AUTH_JWT_HS256_SECRET": edgeJWTSecret, "AUTH_JWT_AUDIENCE": "checkout"}, "token", "-sub", "77"))
	resp, body := send(t, s, "192.0.2.20", "POST", "/api/checkout", jwt, strings.Replace(edgeSeedBody, `"user_id":1,`, ``, 1))
	var mine order
	if err := json.Unmarshal(body, &mine); err != nil || resp.StatusCode != 201 {
		t.Fatalf("signed-in checkout: %d %s", resp.StatusCode, body)
	}
	if resp, body := send(t, s, "192.0.2.20", "POST", "/api/checkout", jwt, edgeSeedBody); resp.StatusCode != http.StatusForbidden {
		t.Errorf("signed-in checkout naming user 1 = %d, want 403: %s", resp.StatusCode, body)
	}
	if resp, body := send(t, s, "192.0.2.20", "GET", fmt.Sprintf("/api/orders/%d", mine.ID), jwt, ""); resp.StatusCode != 200 {
		t.Errorf("own order with the JWT = %d: %s", resp.StatusCode, body)
	}
	if resp, _ := send(t, s, "192.0.2.20", "GET", path, jwt, ""); resp.StatusCode != 404 {
		t.Errorf("a guest's order with a JWT = %d, want 404", resp.StatusCode)
	}
	resp, body = send(t, s, "192.0.2.20", "GET", "/api/orders?mine=1", jwt, "")
	var list struct {
		Orders []order `json:"orders"`
	}
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 || len(list.Orders) != 1 || list.Orders[0].ID != mine.ID {
		t.Errorf("own list: %d %s", resp.StatusCode, body)
	}

	limited := 0
	for range 40 {
		resp, _ := send(t, s, "192.0.2.30", "POST", "/api/checkout", "", edgeSeedBody)
		if resp.StatusCode == http.StatusTooManyRequests {
			if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("429 with Retry-After %q, Content-Type %q", resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"))
			}
			limited++
		} else if resp.StatusCode != 201 {
			t.Fatalf("checkout = %d", resp.StatusCode)
		}
	}
	if limited < 15 {
		t.Fatalf("%d of 40 back-to-back checkouts limited, want at least 15", limited)
	}
}

// runCommand runs a subcommand of a service binary and returns its output.
func runCommand(t *testing.T, name string, env map[string]string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), name), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}
