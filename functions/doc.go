// Package functions holds one folder per Lambda function of template.yaml, each a thin main
// package; this package itself only carries the tests that hold the folders, the template, the
// Makefile, env.json and the sample events under events/ together, and run every built
// bootstrap under the AWS Lambda Runtime Interface Emulator.
package functions
