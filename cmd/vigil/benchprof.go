package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// startProfiles starts the profiles named by non-empty paths (CPU,
// blocking, mutex contention) over what runs until the returned stop,
// which writes them. Blocking and mutex events are sampled at rate 1
// meanwhile: every event counts, at a cost, so compare runs that
// profile with runs that profile.
func startProfiles(cpu, block, mutex string) (stop func() error, err error) {
	var cpuFile *os.File
	if cpu != "" {
		if cpuFile, err = os.Create(cpu); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(cpuFile); err != nil {
			cpuFile.Close()
			return nil, err
		}
	}
	if block != "" {
		runtime.SetBlockProfileRate(1)
	}
	prevMutex := 0
	if mutex != "" {
		prevMutex = runtime.SetMutexProfileFraction(1)
	}
	return func() error {
		var errs []error
		if cpuFile != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpuFile.Close())
		}
		for _, p := range []struct{ name, path string }{{"block", block}, {"mutex", mutex}} {
			if p.path == "" {
				continue
			}
			f, err := os.Create(p.path)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, pprof.Lookup(p.name).WriteTo(f, 0), f.Close())
		}
		if block != "" {
			runtime.SetBlockProfileRate(0)
		}
		if mutex != "" {
			runtime.SetMutexProfileFraction(prevMutex)
		}
		return errors.Join(errs...)
	}, nil
}

// writeHeapProfile writes this process's heap profile to path: what was
// live at the last garbage collection (-sample_index=inuse_space) and
// everything allocated since the start (alloc_space).
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
}

// peakRSSMiB is this process's peak resident set size in MiB (getrusage's
// ru_maxrss, which Linux reports in KiB: the same figure as VmHWM), or 0
// where it is not available. Every `vigil bench` runs the whole stack in
// its own process, so this is the stack's peak plus the load generator's.
func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

// benchJSON prints a bench report as indented JSON (--json).
func benchJSON(out io.Writer, rep any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// batchBody is evs as the body of POST /v1/events/batch.
func batchBody(evs []benchEvent) []byte {
	var b bytes.Buffer
	b.WriteString(`{"events":[`)
	for i, e := range evs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(e.body)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}
