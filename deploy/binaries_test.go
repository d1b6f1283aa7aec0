package deploy

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
)

// TestBinaries builds every service with the flags of its Dockerfile and
// holds the binary to what the images and manifests expect of it: static and
// stripped (it runs on distroless static), it serves the probe paths the
// manifests use, its healthcheck subcommand (the images' HEALTHCHECK and
// compose's healthcheck) follows /readyz, it stops on SIGTERM, and it starts
// with the environment compose and every overlay give it.
func TestBinaries(t *testing.T) {
	svcs := services(t)
	dfs := dockerfiles(t)
	paths := probePaths(t)
	project := composeProject(t)
	readme := readReadme(t)
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}

	// Every environment each service is given, by where it comes from.
	given := map[string]map[string]map[string]string{}
	for name := range svcs {
		given[name] = map[string]map[string]string{"docker-compose.yml": composeEnv(t, project.Services[name])}
	}
	for _, dir := range overlays(t) {
		ws := workloads(t, mustRender(t, dir), readme)
		for name, w := range ws {
			env := map[string]string{}
			for k, v := range w.Env {
				if v != "" && !goRuntimeEnv[k] {
					env[k] = v
				}
			}
			given[name]["overlay "+filepath.Base(dir)] = env
		}
	}

	// The gateway's upstreams: a stand-in that is ready.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"healthy"}`)
	}))
	t.Cleanup(upstream.Close)

	bin := t.TempDir()
	for name, svc := range svcs {
		df := dfs[name]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			exe := filepath.Join(bin, name)
			args := append(append([]string{"build"}, df.BuildFlags...), "-o", exe, df.BuildPkg)
			cmd := exec.Command(goTool(t), args...)
			cmd.Dir = root
			cmd.Env = os.Environ()
			for k, v := range df.BuildEnv {
				if !strings.Contains(v, "$") { // GOOS=$TARGETOS: the host's here
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if runtime.GOOS == "linux" {
				checkELF(t, exe, abs)
			}

			// Its dependencies are down (closed ports), except the gateway's
			// upstreams, so it is ready only if it needs nothing else.
			env := map[string]string{"SHUTDOWN_TIMEOUT": "5s"}
			closed := strconv.Itoa(testenv.ClosedPort(t))
			for k := range svc.Env {
				switch {
				case k == "DATABASE_URL":
					env[k] = "postgres://checkout@127.0.0.1:" + closed + "/checkout?sslmode=disable&connect_timeout=1"
				case k == "AMQP_URL":
					env[k] = "amqp://guest:guest@127.0.0.1:" + closed + "/"
				case k == "SMTP_HOST":
					env[k], env["SMTP_PORT"] = "127.0.0.1", closed
				case strings.HasSuffix(k, "_SERVICE_URL"):
					env[k] = upstream.URL
				}
			}
			wantReady := !svc.Reads("DATABASE_URL") && !svc.Reads("AMQP_URL") && !svc.Reads("SMTP_HOST")
			p := start(t, exe, env)
			base := "http://127.0.0.1:" + env["PORT"]
			if code := get(t, base+"/livez"); code != http.StatusOK {
				t.Errorf("/livez answered %d, want 200", code)
			}
			wantCode := map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[wantReady]
			if code := get(t, base+"/readyz"); code != wantCode {
				t.Errorf("/readyz answered %d with its dependencies down, want %d", code, wantCode)
			}
			for _, path := range append([]string{"/health"}, paths[name]...) {
				if code := get(t, base+path); code == http.StatusNotFound || code == http.StatusMethodNotAllowed {
					t.Errorf("GET %s answered %d: the manifests probe a path the service does not serve", path, code)
				}
			}
			checkAbout(t, base, name)
			// The images' HEALTHCHECK: the Dockerfile's command, run as is.
			hc := exec.Command(exe, df.Healthcheck[1:]...)
			hc.Env = environ(env)
			err := hc.Run()
			var exit *exec.ExitError
			switch {
			case wantReady && err != nil:
				t.Errorf("%q exited with %v while /readyz is 200, want 0", df.Healthcheck, err)
			case !wantReady && !errors.As(err, &exit):
				t.Errorf("%q exited with %v while /readyz is 503, want exit status 1", df.Healthcheck, err)
			}
			p.stop(t)

			// Every environment it is given parses: it starts and listens.
			for from, genv := range given[name] {
				genv = maps.Clone(genv)
				p := start(t, exe, genv)
				if code := get(t, "http://127.0.0.1:"+genv["PORT"]+"/livez"); code != http.StatusOK {
					t.Errorf("with the environment of %s, /livez answered %d", from, code)
				}
				p.kill()
			}
		})
	}
}

// checkAbout: GET / answers 200 JSON naming the service, its endpoints
// (GET / among them), what it consumes and publishes (its queue, for a
// consumer), and, for the gateway, the system's links.
func checkAbout(t *testing.T, base, name string) {
	t.Helper()
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var about struct {
		Service   string
		Version   string
		Endpoints []string
		Consumes  []struct{ Queue string }
		Publishes []string
		Links     map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&about); err != nil || resp.StatusCode != http.StatusOK ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET / answered %d %s (%v), want 200 JSON", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	if about.Service != name || about.Version == "" || !slices.Contains(about.Endpoints, "GET /") || !slices.Contains(about.Endpoints, "GET /health") {
		t.Errorf("GET / says %+v, want service %s, a version and its endpoints", about, name)
	}
	for _, q := range services(t)[name].Queues {
		if !slices.ContainsFunc(about.Consumes, func(c struct{ Queue string }) bool { return c.Queue == q }) {
			t.Errorf("GET / consumes %+v, want its queue %s", about.Consumes, q)
		}
	}
	if name != "gateway" && len(about.Publishes) == 0 {
		t.Errorf("GET / publishes nothing")
	}
	if name == "gateway" && (about.Links["inbox"] == "" || about.Links["rabbitmq_management"] == "") {
		t.Errorf("the gateway's GET / links %v, want the inbox and the management UI", about.Links)
	}
}

// checkELF: static (no interpreter, no dynamic section) and stripped (-s -w),
// with no paths of this machine (-trimpath).
func checkELF(t *testing.T, exe, abs string) {
	t.Helper()
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked (it has an interpreter): it would not run on distroless static")
		}
	}
	for _, s := range []string{".dynamic", ".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(s) != nil {
			t.Errorf("the binary has a %s section: want static and stripped (-ldflags=\"-s -w\")", s)
		}
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(abs+string(filepath.Separator))) {
		t.Errorf("the binary contains the build directory %s: want -trimpath", abs)
	}
}

type process struct {
	cmd  *exec.Cmd
	out  *testenv.SyncBuffer
	done chan error
}

// start runs exe with env, on a port of the kernel's choosing (PORT=0),
// and waits until it listens; it then sets env's PORT to the port it
// listens on.
func start(t *testing.T, exe string, env map[string]string) *process {
	t.Helper()
	env["PORT"] = "0"
	addrFile := filepath.Join(t.TempDir(), "addr")
	p := &process{cmd: exec.Command(exe), out: &testenv.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(environ(env), testenv.ListenAddrFile+"="+addrFile)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { err := p.cmd.Wait(); close(exited); p.done <- err }()
	t.Cleanup(p.kill)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's output:\n%s", filepath.Base(exe), p.out)
		}
	})
	env["PORT"] = strconv.Itoa(testenv.Listening(t, addrFile, exited, 15*time.Second))
	return p
}

// stop sends SIGTERM and wants a clean exit, as at a container's stop.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.out)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("still running 20 s after SIGTERM\n%s", p.out)
	}
}

func (p *process) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
	}
	err := <-p.done
	p.done <- err
}

func get(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func environ(env map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}
