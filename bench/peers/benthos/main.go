// Command benthos is Benthos v4 with only the components peerbench uses:
// the kafka_franz input, the elasticsearch output, and the pure components
// (bloblang, the none metrics exporter and tracer). A custom build as
// Benthos's documentation describes it: its public service package's
// RunCLI with the component packages imported for their registrations.
package main

import (
	"context"

	"github.com/benthosdev/benthos/v4/public/service"

	_ "github.com/benthosdev/benthos/v4/public/components/elasticsearch"
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
)

func main() {
	service.RunCLI(context.Background())
}
