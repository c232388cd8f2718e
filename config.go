package shipper

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// FieldError is a validation problem with one configuration setting. Path
// names the setting relative to the Config that reports it, in its
// configuration names ("chunk_size"); the enclosing configuration prefixes
// its block ("buffer.chunk_size"), so the agent can show the file position of
// the offending value. Return it as a pointer.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	msg := "invalid value"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Path == "" {
		return msg
	}
	return e.Path + ": " + msg
}

func (e *FieldError) Unwrap() error { return e.Err }

// Problems collects the validation problems of one Config, each against
// its setting, so that Validate reports every problem at once.
type Problems []error

// Addf records a problem with the setting at path.
func (p *Problems) Addf(path, format string, args ...any) {
	*p = append(*p, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

// Positive records a problem for each duration that is not positive.
func (p *Problems) Positive(durations map[string]time.Duration) {
	paths := make([]string, 0, len(durations))
	for path := range durations {
		paths = append(paths, path)
	}
	sort.Strings(paths) // a stable order for the report
	for _, path := range paths {
		if d := durations[path]; d <= 0 {
			p.Addf(path, "must be positive, got %s", d)
		}
	}
}

// Err joins the problems, or returns nil when there are none.
func (p Problems) Err() error { return errors.Join(p...) }
