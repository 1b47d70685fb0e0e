from quinkgl_cli.main import main

main()
