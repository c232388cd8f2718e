package shipper

// Secret is a configuration string that must never be printed: its String,
// GoString and MarshalText methods all redact it, so a Secret that reaches a
// log line, a %v or a JSON status document shows as "[redacted]".
// Read the value with Reveal, only where it is handed to a client library.
type Secret string

const redacted = "[redacted]"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// MarshalText keeps JSON and text encoders from printing the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }
