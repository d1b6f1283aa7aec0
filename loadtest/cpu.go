package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the times in /proc (USER_HZ, 100 on every Linux
// architecture Go runs on).
const userHZ = 100

// procTicks reads a process's CPU time (utime + stime, all its threads)
// from /proc/<pid>/stat.
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStat(b)
}

// parseProcStat reads utime + stime from a /proc/<pid>/stat line. The
// command name in parentheses may itself hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseProcStat(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ppid(4) … utime(14) stime(15).
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the name", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return u + s, nil
}

// machineBusy reads the whole machine's busy time (every CPU, everything
// but idle and iowait) from the first line of /proc/stat.
func machineBusy() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return parseCPULine(line)
}

func parseCPULine(line []byte) (int64, error) {
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice];
	// guest time is already inside user.
	var busy int64
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy, nil
}

// processesNamed lists the pids whose command name (/proc/<pid>/comm) is one of names.
func processesNamed(names ...string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/comm")
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		for _, n := range names {
			if comm == n {
				pid, _ := strconv.Atoi(filepath.Base(d))
				out = append(out, pid)
			}
		}
	}
	return out
}

// Component is a set of processes whose CPU is counted together. Pids is
// called at each sample, so processes that appear in between (a new
// database backend) are counted from zero.
type Component struct {
	Name string
	Pids func() []int
}

// fixed is a component of known processes.
func fixed(name string, pids ...int) Component {
	return Component{Name: name, Pids: func() []int {
		var out []int
		for _, p := range pids {
			if p > 0 {
				out = append(out, p)
			}
		}
		return out
	}}
}

// named is a component of every process with the command name.
func named(name string, comms ...string) Component {
	return Component{Name: name, Pids: func() []int { return processesNamed(comms...) }}
}

// CPUSample is the CPU time of every component's processes and of the
// machine at one moment.
type CPUSample struct {
	At      time.Time
	Procs   map[string]map[int]int64 // component → pid → ticks
	Machine int64
}

// sampleCPU reads every component's processes and the machine.
func sampleCPU(cs []Component) (CPUSample, error) {
	s := CPUSample{At: time.Now(), Procs: map[string]map[int]int64{}}
	for _, c := range cs {
		m := map[int]int64{}
		for _, pid := range c.Pids() {
			if t, err := procTicks(pid); err == nil {
				m[pid] = t
			}
		}
		s.Procs[c.Name] = m
	}
	var err error
	s.Machine, err = machineBusy()
	return s, err
}

// CPUUse is what each component used between two samples, in milliseconds.
type CPUUse struct {
	Seconds float64            `json:"window_s"`
	MS      map[string]float64 `json:"cpu_ms"`
	Rest    float64            `json:"rest_of_machine_ms"` // the machine's busy time nobody above used
	Gone    int                `json:"processes_gone"`     // processes that ended inside the window (their time is lost)
}

// cpuBetween is each component's CPU from a to b. A process that started in
// between counts from zero; one that ended is lost (and counted in Gone).
func cpuBetween(a, b CPUSample) CPUUse {
	u := CPUUse{Seconds: b.At.Sub(a.At).Seconds(), MS: map[string]float64{}}
	var all int64
	for name, end := range b.Procs {
		var ticks int64
		for pid, t := range end {
			ticks += t - a.Procs[name][pid]
		}
		for pid := range a.Procs[name] {
			if _, ok := end[pid]; !ok {
				u.Gone++
			}
		}
		all += ticks
		u.MS[name] = float64(ticks) * 1000 / userHZ
	}
	u.Rest = max(0, float64(b.Machine-a.Machine-all)*1000/userHZ)
	return u
}

// listenerPID finds the process listening on a TCP port (of any address),
// for measuring a system this program did not start; 0 when none is found.
func listenerPID(port int) int {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && inodes[l] {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			return pid
		}
	}
	return 0
}
