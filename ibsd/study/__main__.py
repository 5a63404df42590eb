from ibsd.study.cli import main

main()
