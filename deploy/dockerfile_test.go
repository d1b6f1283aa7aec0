package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// A dockerfile is the part of a service's Dockerfile the checks need.
type dockerfile struct {
	Args    map[string]string // ARG defaults declared before the first FROM
	Builder string            // the image of the stage that runs go build
	// The go build command: its environment assignments, its flags (between
	// "build" and "-o"), its output and its package.
	BuildEnv   map[string]string
	BuildFlags []string
	BuildOut   string
	BuildPkg   string
	// The final stage.
	Runtime     string
	User        string
	Expose      []string
	Copies      map[string]string // COPY --from=<builder stage> source -> destination
	Entrypoint  []string
	Healthcheck []string // HEALTHCHECK CMD, exec form
}

// parseDockerfile reads the instructions this project's Dockerfile uses,
// as docker build reads them with the given --build-arg values.
func parseDockerfile(path string, buildArgs map[string]string) (*dockerfile, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b := os.Expand(string(raw), func(k string) string {
		if v, ok := buildArgs[k]; ok {
			return v
		}
		return "${" + k + "}"
	})
	d := &dockerfile{Args: map[string]string{}, Copies: map[string]string{}}
	// Join continuation lines, drop comments and blank lines.
	var lines []string
	var cur strings.Builder
	for _, line := range strings.Split(b, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	stages := 0
	stageImage := map[string]string{}
	var stage, buildStage string
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "ARG":
			if stages == 0 {
				k, v, _ := strings.Cut(rest, "=")
				d.Args[k] = v
			}
		case "FROM":
			stages++
			words := strings.Fields(rest)
			words = slices.DeleteFunc(words, func(w string) bool { return strings.HasPrefix(w, "--platform=") })
			if len(words) == 0 {
				return nil, fmt.Errorf("%s: FROM without an image", path)
			}
			image := os.Expand(words[0], func(k string) string { return d.Args[k] })
			stage = strconv.Itoa(stages - 1)
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				stage = words[2]
			}
			stageImage[stage] = image
			d.Runtime, d.User, d.Expose, d.Entrypoint, d.Healthcheck = image, "", nil, nil, nil
			d.Copies = map[string]string{}
		case "RUN":
			if !strings.Contains(rest, "go build") {
				continue
			}
			words := shellWords(rest)
			for len(words) > 0 && strings.HasPrefix(words[0], "--") { // --mount=...
				words = words[1:]
			}
			i := slices.Index(words, "go")
			if i < 0 || i+1 >= len(words) || words[i+1] != "build" {
				return nil, fmt.Errorf("%s: cannot find `go build` in RUN %s", path, rest)
			}
			d.BuildEnv = map[string]string{}
			for _, w := range words[:i] {
				k, v, ok := strings.Cut(w, "=")
				if !ok {
					return nil, fmt.Errorf("%s: %q before go build is not an assignment", path, w)
				}
				d.BuildEnv[k] = v
			}
			args := words[i+2:]
			o := slices.Index(args, "-o")
			if o < 0 || len(args) != o+3 {
				return nil, fmt.Errorf("%s: want `go build <flags> -o <out> <package>`, got %q", path, args)
			}
			d.BuildFlags, d.BuildOut, d.BuildPkg = args[:o], args[o+1], args[o+2]
			buildStage = stage
			d.Builder = stageImage[stage]
		case "COPY":
			words := strings.Fields(rest)
			from := ""
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				if v, ok := strings.CutPrefix(words[0], "--from="); ok {
					from = v
				}
				words = words[1:]
			}
			if from != "" && from == buildStage && len(words) == 2 {
				d.Copies[words[0]] = words[1]
			}
		case "USER":
			d.User = rest
		case "EXPOSE":
			d.Expose = append(d.Expose, strings.Fields(rest)...)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.Entrypoint); err != nil {
				return nil, fmt.Errorf("%s: ENTRYPOINT must be in exec form: %w", path, err)
			}
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(rest, "CMD ")
			if !ok {
				return nil, fmt.Errorf("%s: HEALTHCHECK without CMD", path)
			}
			if err := json.Unmarshal([]byte(strings.TrimSpace(cmd)), &d.Healthcheck); err != nil {
				return nil, fmt.Errorf("%s: HEALTHCHECK CMD must be in exec form (no shell in the image): %w", path, err)
			}
		}
	}
	if d.BuildFlags == nil {
		return nil, fmt.Errorf("%s: no RUN with go build", path)
	}
	return d, nil
}

// dockerfiles parses the one Dockerfile as each service's image is built
// from it: with its name and port as build arguments (the compose file's
// build args, checked in TestCompose).
func dockerfiles(t *testing.T) map[string]*dockerfile {
	t.Helper()
	out := map[string]*dockerfile{}
	for name, svc := range services(t) {
		d, err := parseDockerfile(filepath.Join(root, "Dockerfile"), imageArgs(svc))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = d
	}
	return out
}

// imageArgs are the build arguments of a service's image.
func imageArgs(svc service) map[string]string {
	return map[string]string{"SERVICE": svc.Name, "PORT": svc.Port(nil)}
}

// makeBuildFlags are the Makefile's BUILD_FLAGS, split into arguments.
func makeBuildFlags(t *testing.T) []string {
	t.Helper()
	v, err := makeVar("BUILD_FLAGS")
	if err != nil {
		t.Fatal(err)
	}
	return shellWords(v)
}

func TestDockerfiles(t *testing.T) {
	makeFlags := makeBuildFlags(t)
	if !slices.Contains(makeFlags, "-trimpath") || !slices.Contains(makeFlags, "-ldflags=-s -w") {
		t.Errorf("Makefile BUILD_FLAGS = %q, want -trimpath and -ldflags=\"-s -w\"", makeFlags)
	}
	modGo := goVersion(t)
	for name, d := range dockerfiles(t) {
		svc := services(t)[name]
		t.Run(name, func(t *testing.T) {
			if !slices.Equal(d.BuildFlags, makeFlags) {
				t.Errorf("go build flags %q, the Makefile's BUILD_FLAGS are %q", d.BuildFlags, makeFlags)
			}
			if d.BuildEnv["CGO_ENABLED"] != "0" {
				t.Errorf("go build runs with %v, want CGO_ENABLED=0 (a static binary for a distroless static image)", d.BuildEnv)
			}
			if d.BuildPkg != "./"+name {
				t.Errorf("go build builds %s, want ./%s", d.BuildPkg, name)
			}
			// The builder's Go must be at least go.mod's, or the build
			// would have to download a toolchain.
			m := regexp.MustCompile(`^(?:docker\.io/(?:library/)?)?golang:(\d+\.\d+)`).FindStringSubmatch(d.Builder)
			if m == nil {
				t.Errorf("build stage image %q, want golang:<version>", d.Builder)
			} else if cmpVersion(m[1], modGo) < 0 {
				t.Errorf("build stage has Go %s, go.mod needs %s", m[1], modGo)
			}
			if !strings.HasPrefix(d.Runtime, "gcr.io/distroless/static") && d.Runtime != "scratch" {
				t.Errorf("runtime image %q, want distroless static or scratch", d.Runtime)
			}
			user, _, _ := strings.Cut(d.User, ":")
			if user == "" || user == "root" || user == "0" {
				t.Errorf("runtime USER %q, want a non-root user", d.User)
			}
			bin, ok := d.Copies[d.BuildOut]
			if !ok {
				t.Fatalf("the runtime stage does not copy the binary %s from the build stage (copies %v)", d.BuildOut, d.Copies)
			}
			if !slices.Equal(d.Entrypoint, []string{bin}) {
				t.Errorf("ENTRYPOINT %q, want [%q]", d.Entrypoint, bin)
			}
			if !slices.Equal(d.Healthcheck, []string{bin, "healthcheck"}) {
				t.Errorf("HEALTHCHECK CMD %q, want [%q, \"healthcheck\"]", d.Healthcheck, bin)
			}
			if port := svc.Port(nil); !slices.Contains(d.Expose, port) {
				t.Errorf("EXPOSE %v, the service listens on %s", d.Expose, port)
			}
		})
	}
}

// cmpVersion compares dotted version numbers: "1.26" < "1.26.1" counts as
// equal in the parts a has.
func cmpVersion(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x - y
		}
	}
	return 0
}

// TestDockerignore holds .dockerignore to what the builds need: every file of
// every package the services are built from (Go and embedded files), go.mod
// and go.sum are in the build context, and the secrets in .env are not.
func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	excluded := func(rel string) bool {
		ex, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	needed := []string{"go.mod", "go.sum"}
	var pkgs []string
	for name := range services(t) {
		pkgs = append(pkgs, "./"+name)
	}
	cmd := exec.Command(goTool(t), append([]string{"list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}}|{{.}}{{end}}{{range .EmbedFiles}}|{{.}}{{end}}{{end}}{{end}}`}, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		if len(parts) < 2 {
			continue
		}
		dir, err := filepath.Rel(abs, parts[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range parts[1:] {
			needed = append(needed, filepath.Join(dir, f))
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, f := range needed {
		if excluded(f) {
			t.Errorf(".dockerignore leaves %s out of the build context; the build needs it", f)
		}
	}
	for _, f := range []string{".env", ".git/config", "bin/gateway", "deploy/README.md", "order/main_test.go"} {
		if !excluded(f) {
			t.Errorf(".dockerignore sends %s to the build context", f)
		}
	}
}

// goTool is the go command that runs this test.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		return filepath.Join(goroot, "bin", "go")
	}
	t.Fatal("no go command in PATH")
	return ""
}
