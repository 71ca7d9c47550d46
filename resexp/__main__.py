from resexp.cli import main

main()
