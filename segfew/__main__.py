from segfew.cli import main

main()
