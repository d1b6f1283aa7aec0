package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// ListenAddrFile is the variable that names the file a service writes the
// address it listens on to (web.ListenAndServe): started with PORT=0 and
// ListenAddrFile set, a service's port is one nobody else can have taken.
const ListenAddrFile = "LISTEN_ADDR_FILE"

// Listening waits until a process started with ListenAddrFile=file writes
// its address there, and returns its port. It fails the test when the
// process ends first (exited is closed) or timeout passes.
func Listening(tb testing.TB, file string, exited <-chan struct{}, timeout time.Duration) int {
	tb.Helper()
	deadline := time.After(timeout)
	for ended := false; ; {
		if b, err := os.ReadFile(file); err == nil {
			_, port, err := net.SplitHostPort(string(b))
			p, perr := strconv.Atoi(port)
			if err != nil || perr != nil {
				tb.Fatalf("%s holds %q, not a host:port", file, b)
			}
			return p
		}
		if ended {
			tb.Fatalf("the process exited before it listened (it wrote no %s); see its log", file)
		}
		select {
		case <-exited:
			ended = true // it may have written the file before it ended: look once more
		case <-deadline:
			tb.Fatalf("the process did not write %s within %v", file, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ClosedPort returns a port of 127.0.0.1 that refuses connections until the
// test ends: it is bound but never listened on, so nobody else can take it,
// unlike a port that was free a moment ago. It stands for a dependency that
// is down.
func ClosedPort(tb testing.TB) int {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// WaitHTTP waits until url answers 200.
func WaitHTTP(tb testing.TB, url string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("%s did not answer 200 within %v", url, timeout)
}

// Run starts a service in-process through its run function, as its main
// does, listening on port 0; it returns the service's base URL and, when the
// test ends, cancels run's context and fails the test unless run returns nil
// within 20 s.
func Run(tb testing.TB, run func(ctx context.Context, listening func(net.Addr)) error) string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(a net.Addr) { addr <- a }) }()
	var base string
	select {
	case a := <-addr:
		base = fmt.Sprintf("http://127.0.0.1:%d", a.(*net.TCPAddr).Port)
	case err := <-done:
		cancel()
		tb.Fatalf("run: %v", err)
	}
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("run returned %v", err)
			}
		case <-time.After(20 * time.Second):
			tb.Error("run did not return within 20s of shutdown")
		}
	})
	return base
}
