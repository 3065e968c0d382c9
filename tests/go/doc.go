// Package spatego is Spate's client-compatibility suite for Go: franz-go's kgo client and its
// kadm admin client against a real `spate serve` started by TestMain (see broker_test.go).
//
//	cd tests/go && SPATE_BIN=/path/to/spate go test -count=1 -timeout 300s ./...
//
// Everything lives in the _test.go files; this file only names the package.
package spatego
