package hcldecode

import (
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// EvalContext returns the context configuration files are evaluated in. It
// provides one function, env(NAME) or env(NAME, DEFAULT), reading the
// process environment. A variable that is set to the empty string counts as
// set. Calling env for an unset variable without a default is an error, so a
// deployment that forgot a secret fails at startup instead of running with "".
func EvalContext() *hcl.EvalContext {
	return EvalContextWith(os.LookupEnv)
}

// EvalContextWith is EvalContext with env() reading from lookup instead of the
// process environment, so tests and tools can evaluate a file hermetically.
func EvalContextWith(lookup func(name string) (string, bool)) *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{
			"env": envFunc(lookup),
		},
	}
}

// unsetEnvError is returned by env() so that Decode can recognise the failure
// among hcl's function-call diagnostics and replace hcl's generic wording.
type unsetEnvError struct{ name string }

func (e *unsetEnvError) Error() string {
	return fmt.Sprintf("environment variable %q is not set", e.name)
}

func envFunc(lookup func(string) (string, bool)) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the value of an environment variable, or the default if it is unset.",
		Params: []function.Parameter{
			{Name: "name", Type: cty.String},
		},
		VarParam: &function.Parameter{Name: "default", Type: cty.String},
		Type:     function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if len(args) > 2 {
				return cty.NilVal, function.NewArgErrorf(2, "env takes a variable name and an optional default, no more")
			}
			name := args[0].AsString()
			if v, ok := lookup(name); ok {
				return cty.StringVal(v), nil
			}
			if len(args) == 2 {
				return args[1], nil
			}
			return cty.NilVal, &unsetEnvError{name: name}
		},
	})
}

// rewriteEnvDiag replaces hcl's "Error in function call" for an unset
// variable with a message that names the variable and the way out, and
// widens the subject from "env(" to the whole call.
func rewriteEnvDiag(d *hcl.Diagnostic) {
	extra, ok := hcl.DiagnosticExtra[hclsyntax.FunctionCallDiagExtra](d)
	if !ok {
		return
	}
	var unset *unsetEnvError
	if !errors.As(extra.FunctionCallError(), &unset) {
		return
	}
	d.Summary = "Environment variable not set"
	d.Detail = fmt.Sprintf("The environment variable %q is not set and env() was given no default. Set it, or give a default: env(%q, \"...\").", unset.name, unset.name)
	if d.Context != nil {
		d.Subject = d.Context
		d.Context = nil
	}
}
