// The commands the tests start must write the same bytes wherever the suite runs. oclif's colour
// library colours even piped output when it sees FORCE_COLOR, CI or COLORTERM, which CI runners
// (and vitest, when its own output is a terminal) set, so a test that passes on a workstation
// failed in CI on escape codes inside a message. Once per test worker, before any test starts a
// command: no colour forced, and NO_COLOR (which the colour library honours) for every child.
for (const name of ['FORCE_COLOR', 'CLICOLOR_FORCE', 'FORCE_TTY']) delete process.env[name]
process.env.NO_COLOR = '1'
