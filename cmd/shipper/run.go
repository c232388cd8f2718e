package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/agent"
)

func runCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/shipper/shipper.hcl", "configuration file")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	cfg, err := agent.LoadConfig(*path)
	if err != nil {
		return err
	}
	log, level := agent.NewLogger(cfg.Log, os.Stderr)
	// The buffer bounds chunk memory; the runtime's soft limit keeps the
	// heap around it from growing between collections. An operator's
	// GOMEMLIMIT wins.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.SoftMemoryLimit())
	}
	log.Info("memory", "buffer_memory_limit", cfg.Buffer.MemoryLimit.String(),
		"go_soft_limit", shipper.ByteSize(debug.SetMemoryLimit(-1)).String())
	a, err := agent.New(cfg, log)
	// A full disk at start is waited out, not exited on: exiting would
	// crash-loop under a supervisor while the data waits on that disk.
	for errors.Is(err, syscall.ENOSPC) {
		log.Error("cannot open the buffer: no space left on its filesystem; retrying every 5s", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(5 * time.Second):
		}
		a, err = agent.New(cfg, log)
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() {
		defer wg.Done()
		flushOnSignal(ctx, a, log)
	}()
	go func() {
		defer wg.Done()
		reloadOnSignal(ctx, *path, a, level, log)
	}()
	return a.Run(ctx)
}

// reloadOnSignal re-reads the configuration file on every SIGHUP, until ctx
// ends, and applies what it can (agent.Agent.Reload: log.level and the
// elasticsearch block); other changes are logged as needing a restart, and
// a file that no longer validates changes nothing. (Credentials in
// password_file, api_key_file and bearer_token_file, and the client
// certificate, are re-read when they change, without a signal.)
func reloadOnSignal(ctx context.Context, path string, a *agent.Agent, level *slog.LevelVar, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := agent.LoadConfig(path)
		if err != nil {
			log.Error("SIGHUP: the configuration file does not load; nothing changed", "file", path, "err", err)
			continue
		}
		applied, restart, err := a.Reload(cfg, level)
		if err != nil {
			log.Error("SIGHUP: configuration partly reloaded", "file", path, "applied", applied, "needs_restart", restart, "err", err)
			continue
		}
		log.Info("SIGHUP: configuration reloaded", "file", path, "applied", applied, "needs_restart", restart)
	}
}

// flushOnSignal flushes on every SIGUSR1, as POST /api/flush does without
// a wait, and logs the flush's id for GET /api/flush/{id}, until ctx ends.
func flushOnSignal(ctx context.Context, a *agent.Agent, log *slog.Logger) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-usr1:
			res := a.Flush(ctx, 0)
			log.Info("flush requested by SIGUSR1", "id", res.ID, "done", res.Done, "sealed_records", res.Sealed,
				"waiting_chunks", res.WaitingChunks, "waiting_records", res.WaitingRecords, "error", res.Error)
		}
	}
}
