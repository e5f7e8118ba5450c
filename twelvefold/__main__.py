from twelvefold.cli import main

main()
