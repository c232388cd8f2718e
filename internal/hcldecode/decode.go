package hcldecode

import (
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	shipper "github.com/shipper-agent/shipper"
)

// maxByteSize matches the limit of shipper.ParseByteSize, so a size given as
// a number and the same size given as a string are accepted alike.
const maxByteSize = 1 << 62

// Decode decodes body into the struct that target points to, which should
// already hold the defaults: an attribute or block absent from body leaves
// its field untouched. Fields are mapped by their hcl tags (see the package
// documentation). ctx is usually EvalContext().
//
// Decode goes on after an error so that one run reports every problem; when
// the diagnostics have errors, target may be partly decoded and should not be
// used. The Positions are valid either way.
//
// Decode panics if target is not a non-nil pointer to a struct or if the
// struct's tags or field types are not supported.
func Decode(body hcl.Body, ctx *hcl.EvalContext, target any) (*Positions, hcl.Diagnostics) {
	rv := reflect.ValueOf(target)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("hcldecode: Decode target must be a non-nil pointer to a struct, not %T", target))
	}
	info := inspect(rv.Elem().Type())
	if info.label != nil {
		panic(fmt.Sprintf("hcldecode: %s: the top-level struct cannot have a label field", rv.Elem().Type()))
	}
	pos := &Positions{info: info, root: body.MissingItemRange(), items: map[string]position{}}
	d := &decoder{ctx: ctx, pos: pos}
	diags := d.body(body, info, rv.Elem(), "")
	return pos, tidy(diags)
}

type decoder struct {
	ctx *hcl.EvalContext
	pos *Positions
}

func (d *decoder) body(body hcl.Body, info *structInfo, v reflect.Value, path string) hcl.Diagnostics {
	content, diags := body.Content(info.schema)
	if content == nil {
		return diags
	}
	for i := range info.fields {
		f := &info.fields[i]
		fpath := joinPath(path, f.name)
		fv := v.Field(f.index)
		switch f.kind {
		case attrField:
			attr, ok := content.Attributes[f.name]
			if !ok {
				continue
			}
			d.pos.items[fpath] = position{subject: attr.Expr.Range(), context: attr.Range}
			diags = append(diags, d.attr(attr, f, fv)...)
		case blockField:
			blocks := content.Blocks.OfType(f.name)
			if len(blocks) == 0 {
				continue
			}
			first := blocks[0]
			for _, dup := range blocks[1:] {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  fmt.Sprintf("Duplicate %s block", f.name),
					Detail: fmt.Sprintf("Only one %q block is allowed here; another was already defined at %s:%d:%d.",
						f.name, first.DefRange.Filename, first.DefRange.Start.Line, first.DefRange.Start.Column),
					Subject: dup.DefRange.Ptr(),
				})
			}
			d.pos.items[fpath] = position{subject: first.DefRange, context: first.DefRange}
			diags = append(diags, d.block(first, f.sub, fv, fpath)...)
		case blockSliceField:
			blocks := content.Blocks.OfType(f.name)
			if len(blocks) == 0 {
				continue
			}
			d.pos.items[fpath] = position{subject: blocks[0].DefRange, context: blocks[0].DefRange}
			s := reflect.MakeSlice(fv.Type(), len(blocks), len(blocks))
			for i, b := range blocks {
				epath := fmt.Sprintf("%s[%d]", fpath, i)
				d.pos.items[epath] = position{subject: b.DefRange, context: b.DefRange}
				diags = append(diags, d.block(b, f.sub, s.Index(i), epath)...)
			}
			fv.Set(s)
		}
	}
	return diags
}

func (d *decoder) block(b *hcl.Block, info *structInfo, v reflect.Value, path string) hcl.Diagnostics {
	if info.label != nil && len(b.Labels) > 0 {
		v.Field(info.label.index).SetString(b.Labels[0])
		d.pos.items[joinPath(path, info.label.name)] = position{subject: b.LabelRanges[0], context: b.DefRange}
	}
	return d.body(b.Body, info, v, path)
}

func (d *decoder) attr(attr *hcl.Attribute, f *field, fv reflect.Value) hcl.Diagnostics {
	val, diags := attr.Expr.Value(d.ctx)
	for _, diag := range diags {
		rewriteEnvDiag(diag)
	}
	if diags.HasErrors() {
		return diags
	}
	val, _ = val.UnmarkDeep()
	if !val.IsWhollyKnown() {
		return append(diags, d.fail(attr, "Invalid value", fmt.Sprintf("The value of %q cannot be determined when the configuration is loaded.", f.name)))
	}
	if val.IsNull() {
		if f.required {
			return append(diags, d.fail(attr, "Missing required argument", fmt.Sprintf("The argument %q is required and must not be null.", f.name)))
		}
		return diags
	}
	if diag := d.set(attr, f, fv, val); diag != nil {
		diags = append(diags, diag)
	}
	return diags
}

// set stores val into fv, or explains why it cannot.
func (d *decoder) set(attr *hcl.Attribute, f *field, fv reflect.Value, val cty.Value) *hcl.Diagnostic {
	t := f.typ
	// Echo the value only if it is written out in the file, and so already
	// in the snippet: a value computed by env() may be a secret put in the
	// wrong variable. (A value bound for a Secret field is never echoed
	// either: every primitive converts to a string, so those cannot fail.)
	_, litDiags := attr.Expr.Value(nil)
	got := describe(val, !litDiags.HasErrors())
	wrongType := func(want string) *hcl.Diagnostic {
		return d.fail(attr, "Incorrect attribute value type",
			fmt.Sprintf("Inappropriate value for attribute %q: %s is required, but got %s.", f.name, want, got))
	}

	switch {
	case t == durationType:
		const forms = `a duration such as "250ms", "5s", "1m30s" or "2h" (units: ns, us, ms, s, m, h)`
		if val.Type() != cty.String {
			return d.fail(attr, "Invalid duration", fmt.Sprintf("The value of %q must be %s; got %s.", f.name, forms, got))
		}
		dur, err := time.ParseDuration(val.AsString())
		if err != nil {
			return d.fail(attr, "Invalid duration", fmt.Sprintf("The value of %q must be %s; got %s.", f.name, forms, got))
		}
		if dur < 0 {
			return d.fail(attr, "Invalid duration", fmt.Sprintf("The value of %q must not be negative; got %s.", f.name, got))
		}
		fv.SetInt(int64(dur))
		return nil

	case t == byteSizeType:
		const forms = `a size such as "512KiB", "64MiB" or "1GB", or a whole number of bytes (units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)`
		switch val.Type() {
		case cty.Number:
			bf := val.AsBigFloat()
			n, acc := bf.Int64()
			if !bf.IsInt() || acc != big.Exact || n < 0 {
				return d.fail(attr, "Invalid size", fmt.Sprintf("The value of %q must be %s; got %s.", f.name, forms, got))
			}
			if n > maxByteSize {
				return d.fail(attr, "Invalid size", fmt.Sprintf("The value of %q is too large; got %s.", f.name, got))
			}
			fv.SetInt(n)
			return nil
		case cty.String:
			n, err := shipper.ParseByteSize(val.AsString())
			if err != nil {
				if strings.Contains(err.Error(), "too large") {
					return d.fail(attr, "Invalid size", fmt.Sprintf("The value of %q is too large; got %s.", f.name, got))
				}
				return d.fail(attr, "Invalid size", fmt.Sprintf("The value of %q must be %s; got %s.", f.name, forms, got))
			}
			fv.SetInt(int64(n))
			return nil
		}
		return d.fail(attr, "Invalid size", fmt.Sprintf("The value of %q must be %s; got %s.", f.name, forms, got))
	}

	switch t.Kind() {
	case reflect.String:
		s, err := convert.Convert(val, cty.String)
		if err != nil {
			return wrongType("a string")
		}
		fv.SetString(s.AsString())

	case reflect.Bool:
		b, err := convert.Convert(val, cty.Bool)
		if err != nil {
			return wrongType("a bool (true or false)")
		}
		fv.SetBool(b.True())

	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := convert.Convert(val, cty.Number)
		if err != nil {
			return wrongType("a whole number")
		}
		bf := n.AsBigFloat()
		if !bf.IsInt() {
			return wrongType("a whole number")
		}
		i, acc := bf.Int64()
		if acc != big.Exact || fv.OverflowInt(i) {
			return d.fail(attr, "Invalid value", fmt.Sprintf("The value of %q is out of range for a %d-bit integer; got %s.", f.name, t.Bits(), got))
		}
		fv.SetInt(i)

	case reflect.Float64:
		n, err := convert.Convert(val, cty.Number)
		if err != nil {
			return wrongType("a number")
		}
		x, _ := n.AsBigFloat().Float64()
		fv.SetFloat(x)

	case reflect.Slice:
		l, err := convert.Convert(val, cty.List(cty.String))
		if err != nil {
			return wrongType("a list of strings")
		}
		out := reflect.MakeSlice(t, 0, l.LengthInt())
		i := 0
		for _, e := range l.Elements() {
			if e.IsNull() {
				return d.fail(attr, "Invalid value", fmt.Sprintf("Element %d of %q is null; a list of strings is required.", i, f.name))
			}
			i++
			out = reflect.Append(out, reflect.ValueOf(e.AsString()).Convert(t.Elem()))
		}
		fv.Set(out)

	case reflect.Map:
		m, err := convert.Convert(val, cty.Map(cty.String))
		if err != nil {
			return wrongType("a map of strings")
		}
		out := reflect.MakeMapWithSize(t, m.LengthInt())
		for k, e := range m.Elements() {
			if e.IsNull() {
				return d.fail(attr, "Invalid value", fmt.Sprintf("Key %q of %q is null; a map of strings is required.", k.AsString(), f.name))
			}
			out.SetMapIndex(reflect.ValueOf(k.AsString()).Convert(t.Key()), reflect.ValueOf(e.AsString()).Convert(t.Elem()))
		}
		fv.Set(out)

	default:
		// inspect admits only the kinds above.
		panic(fmt.Sprintf("hcldecode: unsupported type %s", t))
	}
	return nil
}

func (d *decoder) fail(attr *hcl.Attribute, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity:    hcl.DiagError,
		Summary:     summary,
		Detail:      detail,
		Subject:     attr.Expr.Range().Ptr(),
		Context:     attr.Range.Ptr(),
		Expression:  attr.Expr,
		EvalContext: d.ctx,
	}
}

// describe names a value for an error message, showing the value itself
// only if show is set and it is a primitive, shortened if long.
func describe(v cty.Value, show bool) string {
	t := v.Type()
	switch {
	case t == cty.String && show:
		s := v.AsString()
		if utf8.RuneCountInString(s) > 40 {
			s = string([]rune(s)[:40]) + "..."
		}
		return fmt.Sprintf("the string %q", s)
	case t == cty.Number && show:
		return "the number " + v.AsBigFloat().Text('g', -1)
	case t == cty.Bool && show:
		return fmt.Sprintf("the bool %t", v.True())
	case t.IsTupleType() || t.IsListType() || t.IsSetType():
		return "a list"
	case t.IsObjectType() || t.IsMapType():
		return "an object"
	}
	return "a " + t.FriendlyName()
}

func joinPath(parent, child string) string {
	switch {
	case parent == "":
		return child
	case child == "":
		return parent
	case strings.HasPrefix(child, "["):
		return parent + child
	}
	return parent + "." + child
}

// tidy drops repeated diagnostics (the same expression can be reported more
// than once, e.g. a failing env() inside a template) and orders the rest by
// position, since hcl reports unknown attributes in map order.
func tidy(diags hcl.Diagnostics) hcl.Diagnostics {
	type key struct {
		sev             hcl.DiagnosticSeverity
		summary, detail string
		subject         hcl.Range
		hasSubject      bool
	}
	seen := map[key]bool{}
	out := make(hcl.Diagnostics, 0, len(diags))
	for _, d := range diags {
		k := key{sev: d.Severity, summary: d.Summary, detail: d.Detail}
		if d.Subject != nil {
			k.subject, k.hasSubject = *d.Subject, true
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, d)
	}
	slices.SortStableFunc(out, func(a, b *hcl.Diagnostic) int {
		switch {
		case a.Subject == nil && b.Subject == nil:
			return 0
		case a.Subject == nil:
			return 1
		case b.Subject == nil:
			return -1
		}
		if c := strings.Compare(a.Subject.Filename, b.Subject.Filename); c != 0 {
			return c
		}
		return a.Subject.Start.Byte - b.Subject.Start.Byte
	})
	return out
}
