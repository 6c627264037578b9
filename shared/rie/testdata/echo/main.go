// Command echo is the rie package's test function: it fails its cold start when ECHO_FAIL is
// set (as a function with a missing secret does) and otherwise answers every event with the
// event and the value of ECHO_VALUE.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	if os.Getenv("ECHO_FAIL") != "" {
		fmt.Fprintln(os.Stderr, "config: missing required environment variables: ECHO_SECRET")
		os.Exit(1)
	}
	lambda.Start(func(_ context.Context, ev json.RawMessage) (map[string]any, error) {
		_, path := os.LookupEnv("PATH")
		return map[string]any{"event": ev, "value": os.Getenv("ECHO_VALUE"), "path_leaked": path}, nil
	})
}
