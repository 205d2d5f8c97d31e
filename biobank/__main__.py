from biobank.cli import main

main()
