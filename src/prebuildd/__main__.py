from prebuildd.cli import main

main()
