package hcldecode

import (
	"github.com/shipper-agent/shipper"

	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// Positions records where Decode found each attribute and block, so that
// errors found later, by a Config's Validate method, can point into the file.
//
// Paths use hcl names joined by dots, with an index for repeated blocks:
// "buffer.memory_limit", "output[1].url". Go field names are accepted in any
// segment too ("Buffer.MemoryLimit"), so a Validate method can name fields
// either way.
type Positions struct {
	info  *structInfo
	root  hcl.Range
	items map[string]position
}

type position struct {
	subject hcl.Range // an attribute's value, a block's header, a label
	context hcl.Range // the whole "name = value", or the block header again
}

// FieldRange returns the range of the value of the attribute at path. If that
// attribute was not set in the file, it returns the header of the innermost
// enclosing block that was, and failing that the start of the file: the
// default is at fault then, and that is the nearest place to fix it.
// A nil *Positions returns the zero Range.
func (p *Positions) FieldRange(path string) hcl.Range {
	if p == nil {
		return hcl.Range{}
	}
	it, _ := p.find(p.normalize(path))
	return it.subject
}

// find returns the position of key or of its nearest recorded ancestor, and
// whether key itself was recorded.
func (p *Positions) find(key string) (position, bool) {
	exact := true
	for {
		if it, ok := p.items[key]; ok {
			return it, exact
		}
		if key == "" {
			return position{subject: p.root, context: p.root}, exact
		}
		key, exact = parentPath(key), false
	}
}

// normalize maps each segment of path to its hcl name, so Go names and hcl
// names find the same entry. Segments it cannot resolve are kept as written.
func (p *Positions) normalize(path string) string {
	path = strings.TrimSpace(path)
	if path == "" {
		return ""
	}
	info := p.info
	segs := strings.Split(path, ".")
	for i, seg := range segs {
		name, index := seg, ""
		if j := strings.IndexByte(seg, '['); j >= 0 {
			name, index = seg[:j], seg[j:]
		}
		if info == nil {
			continue
		}
		f := info.lookup(name)
		if f == nil {
			info = nil
			continue
		}
		segs[i] = f.name + index
		info = f.sub
	}
	return strings.Join(segs, ".")
}

// parentPath strips the last segment: "a.b[1].c" -> "a.b[1]" -> "a.b" -> "a" -> "".
func parentPath(key string) string {
	if strings.HasSuffix(key, "]") {
		if i := strings.LastIndexByte(key, '['); i >= 0 {
			return key[:i]
		}
	}
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[:i]
	}
	return ""
}

// Diagnostics turns err, typically what a Config's Validate returned, into
// error diagnostics placed by Positions. err may join several errors
// (errors.Join); each becomes one diagnostic. An error that is or wraps a
// *FieldError is placed at FieldRange(Path) and summarised with the path;
// any other error is placed at the start of the file.
func (p *Positions) Diagnostics(err error) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, e := range flatten(err) {
		d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid configuration", Detail: sentence(e.Error())}
		var it position
		var exact bool
		var fe *FieldError
		if errors.As(e, &fe) {
			key := ""
			if p != nil {
				key = p.normalize(fe.Path)
			}
			if key != "" {
				d.Summary = fmt.Sprintf("Invalid value for %q", key)
			}
			if fe.Err != nil {
				d.Detail = sentence(fe.Err.Error())
			}
			if p != nil {
				it, exact = p.find(key)
				if !exact && key != "" {
					d.Detail += fmt.Sprintf(" (%q is not set in the file, so its default applies.)", key)
				}
			}
		} else if p != nil {
			it = position{subject: p.root}
		}
		if p != nil {
			d.Subject = it.subject.Ptr()
			if exact && it.context != it.subject {
				d.Context = it.context.Ptr()
			}
		}
		diags = append(diags, d)
	}
	return diags
}

// flatten undoes errors.Join, recursively.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// sentence capitalises msg and ends it with a period, as hcl details are
// written, so Validate errors can keep Go's lower-case style.
func sentence(msg string) string {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return "Invalid value."
	}
	r, n := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[n:]
	if !strings.ContainsAny(msg[len(msg)-1:], ".!?") {
		msg += "."
	}
	return msg
}

// FieldError is shipper.FieldError: a semantic error about one
// configuration field, returned by a Config's Validate so the caller can show
// it at the field's place in the file. It lives in the root package so that
// the packages owning Configs need not import HCL.
type FieldError = shipper.FieldError

// Errorf returns a *FieldError for path with a message formatted as by
// fmt.Errorf (so %w works).
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// Nest places err, returned by the Validate of a nested Config, under the
// block path prefix ("buffer", "output[2]"): a *FieldError gets its Path
// prefixed, any other error becomes a FieldError for the block as a whole,
// and the errors inside an errors.Join are each nested. A nil err stays nil.
func Nest(prefix string, err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		out := make([]error, 0, len(errs))
		for _, e := range errs {
			out = append(out, Nest(prefix, e))
		}
		return errors.Join(out...)
	}
	if fe, ok := err.(*FieldError); ok {
		return &FieldError{Path: joinPath(prefix, fe.Path), Err: fe.Err}
	}
	return &FieldError{Path: prefix, Err: err}
}
