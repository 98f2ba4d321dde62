from facecvt.cli import main

main()
