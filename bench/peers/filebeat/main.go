// Command filebeat is Filebeat 7.17 built from its module, with its
// default inputs (the Kafka input among them): what the main package of
// github.com/elastic/beats/v7/filebeat runs.
package main

import (
	"os"

	"github.com/elastic/beats/v7/filebeat/cmd"
	inputs "github.com/elastic/beats/v7/filebeat/input/default-inputs"
)

func main() {
	if err := cmd.Filebeat(inputs.Init, cmd.FilebeatSettings()).Execute(); err != nil {
		os.Exit(1)
	}
}
