package web

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Command is a subcommand of a service binary, such as `order healthcheck`.
type Command struct {
	Name string
	Run  func(ctx context.Context, args []string) error
}

// Main is what every main does: read cfg from the environment, run a
// subcommand when one is named, or else call run with a context that SIGINT
// and SIGTERM cancel. It exits 1 on any error. commands is called after cfg
// is read, so it can use its values.
func Main(name string, cfg any, run func(context.Context) error, commands func() []Command) {
	steadySysmonUnlessSet()
	LeanRuntime()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := envconfig.Process("", cfg); err != nil {
		fmt.Fprintln(os.Stderr, name+": config:", err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && commands != nil {
		for _, c := range commands() {
			if c.Name == os.Args[1] {
				if err := c.Run(ctx, os.Args[2:]); err != nil {
					fmt.Fprintf(os.Stderr, "%s %s: %v\n", name, c.Name, err)
					os.Exit(1)
				}
				return
			}
		}
	}
	stopProfile := startProfile(name)
	err := run(ctx)
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// LeanRuntime is how Main sets up the Go runtime before anything runs:
// one P (oneCoreUnlessSet) and GOGC 400 (lessGCUnlessSet), each unless
// its variable is set. A program that shares the machine with the
// services and should take little of it (make bench's load generator)
// calls it too.
func LeanRuntime() {
	oneCoreUnlessSet()
	lessGCUnlessSet()
}

// oneCoreUnlessSet runs the process's Go code on one core at a time
// (GOMAXPROCS 1) unless the GOMAXPROCS variable says otherwise. A service
// here spends most of its time waiting on Postgres, RabbitMQ or SMTP, and
// with a P per core each wake-up hands goroutines between threads that
// spin and park: at 80 orders/s that costs the four services about a
// quarter more CPU per order than one P does, and one P still has room for
// several hundred orders/s per process. The runtime's own default follows
// a cgroup's CPU limit but never goes below 2, so without this a pod
// limited to one CPU would still run two Ps. Set GOMAXPROCS to use more
// cores in one process (a pod whose CPU limit is above 1), or run more
// replicas.
func oneCoreUnlessSet() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// gcPercent is the collector's GOGC when the variable is unset.
const gcPercent = 400

// lessGCUnlessSet lets the heap grow to five times what is live between
// two collections (GOGC 400) instead of twice (the runtime's 100), unless
// the GOGC variable says otherwise. A service keeps little alive (a few
// MB: pools, buffers, the requests in flight) and allocates per request,
// so with the default the collector starts whenever 4 MB were allocated:
// several times a second under load, each cycle taking a quarter of the
// one P and its assists taking more. At 16 closed-loop clients (make
// bench, 2026-12-03) the gateway and the order service spent 0.23 ms of
// CPU per checkout with GOGC 400 against 0.31 with the default; 1000 did
// no better. The heap then stays under about 20 MB; where memory is tight,
// GOMEMLIMIT (the manifests set it from the pod's limit) makes the
// collector run sooner as the limit nears, whatever GOGC is.
func lessGCUnlessSet() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// sysmonSetting is the GODEBUG setting steadySysmonUnlessSet adds: a
// scheduler trace every 2^31-1 ms (24.8 days of the host's monotonic
// clock, so a host up longer than that prints one SCHED line at start).
const sysmonSetting = "schedtrace=2147483647"

// steadySysmonUnlessSet starts the process again, in place (same pid, same
// arguments), with GODEBUG's schedtrace set, unless GODEBUG already names
// schedtrace (GODEBUG=schedtrace=0 keeps the runtime's default). The
// runtime reads schedtrace once, at start, and while it is 0 the system
// monitor thread sleeps whenever every P is idle; the next system call
// then wakes it with a futex and it polls every 20 µs again, taking the P
// from calls that block a little and handing it to another thread. A
// service on one P that idles between every few messages pays that on
// most of its system calls: at 80 orders/s, with the trace setting, the
// four services spent 2.8 ms of CPU per order instead of 3.7 (2026-12-03,
// see the README's "Measured figures"). An idle service's monitor then wakes every
// 10 ms, which costs nothing measurable; the only other effect of
// schedtrace is a scheduler dump when the process dies of a fatal error.
func steadySysmonUnlessSet() {
	godebug := os.Getenv("GODEBUG")
	if strings.Contains(godebug, "schedtrace=") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return // run as we are: only slower
	}
	if godebug != "" {
		godebug += ","
	}
	env := []string{"GODEBUG=" + godebug + sysmonSetting}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") { // the runtime would read the first
			env = append(env, kv)
		}
	}
	err = syscall.Exec(exe, os.Args, env)
	fmt.Fprintln(os.Stderr, "starting again with GODEBUG="+sysmonSetting+":", err) // Exec returns only on failure
}

// HealthcheckCommand is the `healthcheck` subcommand every binary has, for
// container healthchecks in images without a shell or curl: it exits 0
// when the service on this host's port answers /readyz with 200.
func HealthcheckCommand(port string) Command {
	return Command{Name: "healthcheck", Run: func(context.Context, []string) error {
		client := &http.Client{Timeout: 3 * time.Second}
		resp, err := client.Get("http://127.0.0.1:" + port + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz answered %s", resp.Status)
		}
		return nil
	}}
}

// ListenAndServe listens on addr (host:port), serves h until ctx is done,
// then stops taking requests and lets those in flight finish within
// timeout. stopping is set as the shutdown begins, so /readyz fails at
// once. listening, when not nil, is told the bound address (tests listen
// on port 0); a process started with PORT=0 learns it from the file that
// LISTEN_ADDR_FILE names, written (whole, by a rename) once it listens.
func ListenAndServe(ctx context.Context, log *slog.Logger, addr string, h http.Handler, timeout time.Duration,
	stopping *atomic.Bool, listening func(net.Addr), attrs ...any) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if listening != nil {
		listening(ln.Addr())
	}
	if file := os.Getenv("LISTEN_ADDR_FILE"); file != "" {
		err := os.WriteFile(file+".tmp", []byte(ln.Addr().String()), 0o644)
		if err == nil {
			err = os.Rename(file+".tmp", file)
		}
		if err != nil {
			ln.Close()
			return fmt.Errorf("LISTEN_ADDR_FILE: %w", err)
		}
	}
	log.Info("listening", append([]any{"addr", ln.Addr().String()}, attrs...)...)
	srv := NewServer(h, log)
	srv.RegisterOnShutdown(func() { stopping.Store(true) })
	err = Serve(ctx, srv, ln, timeout)
	stopping.Store(true)
	log.Info("shutting down")
	return err
}
