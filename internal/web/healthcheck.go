package web

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

// Healthcheck is the `healthcheck` subcommand every binary has, for container
// healthchecks in images without a shell or curl: it asks the service on
// this host for /readyz and returns the process exit code (0 when ready).
func Healthcheck(port string) int {
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + port + "/readyz")
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck: /readyz answered", resp.Status)
		return 1
	}
	return 0
}
