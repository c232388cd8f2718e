package agent

import (
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
)

// Reload compares a configuration read again (on SIGHUP) with the running
// one. It applies what can change while the agent runs, log.level, and
// returns the configuration now in effect, the settings it applied and the
// settings that changed but need a restart, named as in the file
// ("elasticsearch.urls"). Values are never returned: some are secrets.
func Reload(running, next Config, level *slog.LevelVar) (effective Config, applied, restart []string) {
	was, now := settings(running), settings(next)
	effective = running
	for _, name := range changed(was, now) {
		switch name {
		case "log.level":
			l, err := parseLevel(next.Log.Level)
			if err != nil { // validated already; kept for safety
				restart = append(restart, name)
				continue
			}
			level.Set(l)
			effective.Log.Level = next.Log.Level
			applied = append(applied, name)
		default:
			restart = append(restart, name)
		}
	}
	return effective, applied, restart
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
