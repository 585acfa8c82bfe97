from hvtnas.cli import main

main()
