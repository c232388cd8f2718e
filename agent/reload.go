package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// restartOnly are the elasticsearch settings a reload does not apply: the
// number of delivery workers (and the memory sized for them), what only the
// start-up check uses, and what the delivery loop and the pipeline
// watchdog were built with.
var restartOnly = map[string]bool{
	"elasticsearch.max_in_flight": true, "elasticsearch.startup_timeout": true,
	"elasticsearch.template_file": true, "elasticsearch.template_name": true,
	"elasticsearch.pipeline_stall_timeout": true, "elasticsearch.retry_initial_backoff": true,
	"elasticsearch.retry_max_backoff": true, "elasticsearch.max_item_attempts": true,
}

// Reload applies a configuration read again (on SIGHUP) to the running
// agent, as far as it can while running: log.level at once, and the
// elasticsearch block (nodes, credentials, TLS, index, timeouts...) by
// replacing the output: the delivery workers restart on the new one (a
// chunk being sent goes back to the buffer and is sent again, its
// documents found already indexed), and the old one is closed once its
// workers returned. It returns the settings applied and those that changed
// but need a restart, named as in the file ("elasticsearch.urls"); values
// are never returned, some are secrets. An elasticsearch block the output
// refuses is an error, and nothing of that block changes.
func (a *Agent) Reload(next Config, level *slog.LevelVar) (applied, restart []string, err error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	var esChanged []string
	for _, name := range changed(settings(a.cfg), settings(next)) {
		switch {
		case name == "log.level":
			l, perr := parseLevel(next.Log.Level)
			if perr != nil { // validated already
				restart = append(restart, name)
				continue
			}
			level.Set(l)
			a.cfg.Log.Level = next.Log.Level
			applied = append(applied, name)
		case strings.HasPrefix(name, "elasticsearch.") && !restartOnly[name]:
			esChanged = append(esChanged, name)
		default:
			restart = append(restart, name)
		}
	}
	if len(esChanged) == 0 {
		return applied, restart, nil
	}
	if a.stopping {
		return applied, append(restart, esChanged...), errors.New("shutting down: the elasticsearch block is not reloaded")
	}
	es := next.Elasticsearch
	cur := a.cfg.Elasticsearch
	es.MaxInFlight, es.StartupTimeout, es.TemplateFile, es.TemplateName = cur.MaxInFlight, cur.StartupTimeout, cur.TemplateFile, cur.TemplateName
	es.PipelineStallTimeout, es.RetryInitialBackoff, es.RetryMaxBackoff, es.MaxItemAttempts =
		cur.PipelineStallTimeout, cur.RetryInitialBackoff, cur.RetryMaxBackoff, cur.MaxItemAttempts
	out, err := elasticsearch.New(es, a.log.With("component", "elasticsearch"))
	if err != nil {
		return applied, append(restart, esChanged...), fmt.Errorf("reload the elasticsearch block: %w", err)
	}
	old := a.outp.Swap(out)
	a.cfg.Elasticsearch = es
	var prev <-chan struct{}
	if a.workers.started() {
		prev = a.workers.restart()
	}
	a.retiring.Add(1)
	go func() {
		defer a.retiring.Done()
		// The old output serves its workers until they returned (a
		// cancelled send returns at once; a wedged one is not waited
		// for past the longest request), or, before the workers ever
		// started, the start-up check, until shutdown.
		if prev == nil {
			<-a.stopped
		} else {
			// Shutdown does not wait for it: its workers were cancelled
			// at the switch already.
			select {
			case <-prev:
			case <-a.stopped:
			case <-time.After(2*cur.RequestTimeout + 10*time.Second):
			}
		}
		old.Close()
	}()
	return append(applied, esChanged...), restart, nil
}

// changed returns the names whose values differ, sorted.
func changed(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// settings flattens a configuration into setting name -> value, following
// the hcl tags, so that a change is reported under the name the operator
// wrote.
func settings(c Config) map[string]string {
	out := map[string]string{}
	flatten(reflect.ValueOf(c), "", out)
	return out
}

func flatten(v reflect.Value, prefix string, out map[string]string) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("hcl")
		if tag == "" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if prefix != "" {
			name = prefix + "." + name
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Pointer && !fv.IsNil() && fv.Elem().Kind() == reflect.Struct {
			fv = fv.Elem()
		}
		switch {
		case strings.Contains(opts, "block") && fv.Kind() == reflect.Struct:
			flatten(fv, name, out)
		case fv.Kind() == reflect.String:
			// The raw value, Secret included (it prints redacted):
			// compared, never shown.
			out[name] = fv.String()
		default:
			out[name] = fmt.Sprintf("%v", fv.Interface())
		}
	}
}
