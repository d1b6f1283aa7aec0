package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
)

// The sampler reads this machine's real /proc lines, and what it reads
// grows when the process works.
func TestProcStatOfThisMachine(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseProcStat(b); err != nil {
		t.Fatalf("parse %q: %v", b, err)
	}
	before, err := procTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Work until the kernel has charged at least one tick more (bounded).
	x := 0
	for deadline := time.Now().Add(30 * time.Second); ; {
		for i := range 1_000_000 {
			x ^= i
		}
		now, err := procTicks(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if now > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %d ticks while the test worked (%d)", before, x)
		}
	}
	busy, err := machineBusy()
	if err != nil || busy <= 0 {
		t.Fatalf("machine busy %d: %v", busy, err)
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name string
		line string
		want int64
		err  bool
	}{
		// A command name with spaces and parentheses: fields count from the last ')'.
		{"OddName", "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 1 0 0 0 7 5 0 0 20 0 1 0 100 1000 10", 12, false},
		{"Plain", "1 (postgres) S 0 1 1 0 -1 4194560 1 0 0 0 100 23 0 0 20 0 1 0 100 1000 10", 123, false},
		{"ErrShort", "1 (x) S 0 1", 0, true},
		{"ErrNoName", "1 x S 0 1 1 0 -1 4194560 1 0 0 0 100 23", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.line))
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("got %d, %v; want %d (error %v)", got, err, tt.want, tt.err)
			}
		})
	}
	if _, err := parseCPULine([]byte("cpu  10 0 5 100 7 1 1 0 0 0")); err != nil {
		t.Fatal(err)
	}
	if got, _ := parseCPULine([]byte("cpu  10 0 5 100 7 1 1 0 0 0")); got != 17 {
		t.Fatalf("busy %d, want 17 (idle and iowait left out)", got)
	}
}

// A process that started inside the window counts from zero, one that
// ended is reported, and what nobody used is the rest of the machine.
func TestCPUBetween(t *testing.T) {
	at := time.Now()
	a := CPUSample{At: at, Machine: 1000, Procs: map[string]map[int]int64{"postgres": {1: 50, 2: 10}, "order": {3: 5}}}
	b := CPUSample{At: at.Add(2 * time.Second), Machine: 1100, Procs: map[string]map[int]int64{"postgres": {1: 60, 4: 7}, "order": {3: 25}}}
	u := cpuBetween(a, b)
	if u.MS["postgres"] != 170 || u.MS["order"] != 200 || u.Gone != 1 || u.Rest != 630 || u.Seconds != 2 {
		t.Fatalf("%+v", u)
	}
}

func TestListenerPID(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := listenerPID(ln.Addr().(*net.TCPAddr).Port); got != os.Getpid() {
		t.Fatalf("listener pid %d, want %d", got, os.Getpid())
	}
}

// The floor's pgbench script holds the measured transactions and row
// operations, and pgbench runs it.
func TestPgbenchScript(t *testing.T) {
	w := Work{Transactions: 6.5, Inserted: 11, Updated: 3, Deleted: 0.5, IndexScans: 22.25}
	s := pgbenchScript(w, 4)
	commits := strings.Count(s, "COMMIT;")
	if got := strings.Count(s, "INSERT INTO floor_rows"); got != 44 {
		t.Errorf("%d inserts, want 44", got)
	}
	if got := strings.Count(s, "UPDATE floor_rows"); got != 12 {
		t.Errorf("%d updates, want 12", got)
	}
	if got := strings.Count(s, "DELETE FROM floor_rows"); got != 2 {
		t.Errorf("%d deletes, want 2", got)
	}
	if got := strings.Count(s, "SELECT k FROM floor_rows"); got != 75 { // 4 × (22.25 − 3 − 0.5)
		t.Errorf("%d reads, want 75", got)
	}
	if commits != 26 {
		t.Errorf("%d transactions, want 26:\n%s", commits, s)
	}
	if _, err := exec.LookPath("pgbench"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pgbench is required under CI (PostgreSQL's client tools)")
		}
		t.Skip("pgbench is not installed; CI requires it")
	}
	db := testenv.Database(t)
	ctx := context.Background()
	if _, err := exec.CommandContext(ctx, "psql", "-q", db, "-c", floorSchema).CombinedOutput(); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "floor.sql")
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-t", "2", "-f", f, db).CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
}
