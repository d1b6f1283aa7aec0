package deploy

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/checkout-demo/checkout/internal/events"
)

// root is the repository root, relative to this package's directory (where
// go test runs).
const root = ".."

// A service is what the manifests are held to, read from its Go source.
type service struct {
	Name string
	// Env maps every variable the service reads (the envconfig tags of its
	// Config) to its default.
	Env map[string]string
	// Queues are the values of the package's string constants whose name
	// ends in Queue (a literal, or one of contractQueues): the queues it
	// consumes.
	Queues []string
}

// contractQueues are the contract's queue names a service's constant may
// be (const Queue = events.QueuePayment).
var contractQueues = map[string]string{"QueuePayment": events.QueuePayment, "QueueEmail": events.QueueEmail, "QueueOrderSaga": events.QueueOrderSaga}

// Port is the port the service listens on with the environment env.
func (s service) Port(env map[string]string) string {
	if p, ok := env["PORT"]; ok {
		return p
	}
	return s.Env["PORT"]
}

// Reads reports whether the service reads the variable name.
func (s service) Reads(name string) bool {
	_, ok := s.Env[name]
	return ok
}

// goRuntimeEnv are variables the Go runtime itself reads.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true}

// otelEnv are the OTEL_* variables the OpenTelemetry set-up reads
// (telemetry.Setup and the SDK it builds) in a service that calls
// web.Telemetry (or worker.Open, which does): they are no envconfig tags,
// and only those services read them.
var otelEnv = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_INSECURE",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
}

var loadServices = sync.OnceValues(func() (map[string]service, error) {
	names, err := makeVar("SERVICES")
	if err != nil {
		return nil, err
	}
	out := map[string]service{}
	for _, name := range strings.Fields(names) {
		s, err := parseService(name)
		if err != nil {
			return nil, err
		}
		out[name] = s
	}
	return out, nil
})

// services returns the services the Makefile builds, read from their source.
func services(t *testing.T) map[string]service {
	t.Helper()
	s, err := loadServices()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) == 0 {
		t.Fatal("the Makefile names no SERVICES")
	}
	return s
}

// parseService reads the service's package with go/parser: the envconfig
// tags of its Config struct and its queue constants.
func parseService(name string) (service, error) {
	s := service{Name: name, Env: map[string]string{}}
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(root, name, "*.go"))
	if err != nil {
		return s, err
	}
	foundConfig, traced := false, false
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return s, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
					if pkg, ok := sel.X.(*ast.Ident); ok && (pkg.Name+"."+sel.Sel.Name == "web.Telemetry" || pkg.Name+"."+sel.Sel.Name == "worker.Open") {
						traced = true
					}
				}
			case *ast.TypeSpec:
				st, ok := n.Type.(*ast.StructType)
				if n.Name.Name != "Config" || !ok {
					return true
				}
				foundConfig = true
				for _, field := range st.Fields.List {
					if field.Tag == nil {
						continue
					}
					tag, _ := strconv.Unquote(field.Tag.Value)
					if env := reflect.StructTag(tag).Get("envconfig"); env != "" {
						s.Env[env] = reflect.StructTag(tag).Get("default")
					}
				}
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if !strings.HasSuffix(id.Name, "Queue") || i >= len(n.Values) {
						continue
					}
					if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						s.Queues = append(s.Queues, v)
					}
					if sel, ok := n.Values[i].(*ast.SelectorExpr); ok && contractQueues[sel.Sel.Name] != "" {
						s.Queues = append(s.Queues, contractQueues[sel.Sel.Name])
					}
				}
			}
			return true
		})
	}
	if !foundConfig || len(s.Env) == 0 {
		return s, &os.PathError{Op: "find envconfig tags of type Config", Path: filepath.Join(root, name), Err: os.ErrNotExist}
	}
	if traced {
		for _, k := range otelEnv {
			s.Env[k] = ""
		}
	}
	return s, nil
}

// makeVar returns the value of a `NAME := value` line of the Makefile.
func makeVar(name string) (string, error) {
	f, err := os.Open(filepath.Join(root, "Makefile"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `\s*[:?]?=\s*(.*)$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			return strings.TrimSpace(m[1]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", &os.PathError{Op: "find Makefile variable " + name, Path: "Makefile", Err: os.ErrNotExist}
}

// goVersion is the go directive of go.mod.
func goVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go\s+(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// shellWords splits s like a POSIX shell does for simple words: blanks
// separate, quotes group and are removed, a backslash escapes.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == '\'':
			cur.WriteRune(c)
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case quote == 0 && (c == '\'' || c == '"'):
			quote, inWord = c, true
		case quote == 0 && (c == ' ' || c == '\t' || c == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func TestServicesAreRead(t *testing.T) {
	// The checks below are only as good as this model of the code.
	all := services(t)
	for _, name := range []string{"gateway", "order", "payment", "email"} {
		s, ok := all[name]
		if !ok {
			t.Fatalf("service %s missing from the Makefile's SERVICES", name)
		}
		if s.Env["PORT"] == "" {
			t.Errorf("%s: no default PORT among its envconfig tags %v", name, slices.Sorted(maps.Keys(s.Env)))
		}
	}
	for name, svc := range all {
		if !svc.Reads("OTEL_EXPORTER_OTLP_ENDPOINT") || svc.Reads("OTEL_NOT_A_VARIABLE") {
			t.Errorf("%s: OTEL_* variables misread (it calls web.Telemetry): %v", name, slices.Sorted(maps.Keys(svc.Env)))
		}
	}
	if !all["order"].Reads("DATABASE_URL") || all["gateway"].Reads("DATABASE_URL") {
		t.Errorf("envconfig tags misread: order %v, gateway %v", all["order"].Env, all["gateway"].Env)
	}
	if got := all["payment"].Queues; !slices.Contains(got, "payment.order-created") {
		t.Errorf("payment queues = %v, want payment.order-created among them", got)
	}
	if got := shellWords(`-trimpath -ldflags="-s -w" 'a b' c\ d`); !slices.Equal(got, []string{"-trimpath", "-ldflags=-s -w", "a b", "c d"}) {
		t.Errorf("shellWords = %q", got)
	}
}
