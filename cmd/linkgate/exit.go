package main

import (
	"errors"
	"fmt"

	"github.com/linkgate/linkgate/sidecar"
)

// Exit codes: the one table, documented in the README ("Exit codes").
//
//	code  wait        check       other commands
//	0     ready       ready       success (--config.check: valid)
//	1     timed out   not ready   runtime failure (cannot listen, ...)
//	2     error       error       invalid usage or configuration
const (
	exitOK      = 0
	exitFailure = 1
	exitInvalid = 2
)

// exitError ends the program with a specific exit code; err, if any, is
// printed first.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// exitCode is the exit code for what a command's Run returned.
func exitCode(err error) int {
	var ee *exitError
	var ce *configError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		return exitInvalid
	}
	return exitFailure
}

// waitExit is wait's result as an exit: a timeout is 1 (not yet), any other
// error 2 (waiting would not fix it).
func waitExit(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sidecar.ErrTimeout):
		return &exitError{exitFailure, err}
	}
	return &exitError{exitInvalid, err}
}
