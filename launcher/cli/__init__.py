"""The `packrun` command line: thin commands that parse, call one package and print (`main`),
`--help` written from them (`help`), and how flags reach the job spec (`flags`).

May import: every other package of `launcher`; `src` only inside the commands that need
MindSpore (export, predict, pictures).
"""
